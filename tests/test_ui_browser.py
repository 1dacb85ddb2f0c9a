"""`sds ui` in a real headless Chromium (Debian's, driven by Selenium): the runs, a run, the
lineage of a 200-runtime run with a click through to a node, a program with a diff, an
evaluation with its LLM prompt, the XSS case. A screenshot of each page goes to results/ui/.

Skips with a reason where Chromium, ChromeDriver or Selenium is missing
(`bash scripts/install_chromium.sh` installs them).
"""

# ruff: noqa: F811  (pytest fixtures imported from test_ui_fixtures are parameters here)

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("flask", reason="the ui extra is not installed (pip install -e '.[ui]')")
pytest.importorskip("waitress", reason="the ui extra is not installed (pip install -e '.[ui]')")
webdriver = pytest.importorskip("selenium.webdriver",
                                reason="selenium is not installed (the dev extra has it)")

from selenium.common.exceptions import JavascriptException, NoAlertPresentException
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait
from test_ui_fixtures import UIData, ui_data  # noqa: F401

from evolve.ui.server import make_server
from population_db import Store

CHROMIUM = os.environ.get("SDS_CHROMIUM", "/usr/bin/chromium")
DRIVER = os.environ.get("SDS_CHROMEDRIVER", "/usr/bin/chromedriver")
SHOTS = Path(__file__).resolve().parents[1] / "results" / "ui"
pytestmark = pytest.mark.skipif(
    not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM))
    or not (Path(DRIVER).exists() or shutil.which(DRIVER)),
    reason=f"no Chromium at {CHROMIUM} or no ChromeDriver at {DRIVER} "
           "(bash scripts/install_chromium.sh installs Debian's chromium and chromium-driver)")


@pytest.fixture(scope="module")
def base(ui_data: UIData) -> Iterator[str]:
    """The UI on a free loopback port, served from a thread."""
    server = make_server(ui_data.url, "127.0.0.1", 0)
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{server.effective_port}"
    finally:
        server.task_dispatcher.shutdown()
        server.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    """One headless Chromium for the whole module."""
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=1400,1000", "--hide-scrollbars"):
        opts.add_argument(a)
    service = webdriver.ChromeService(executable_path=DRIVER)
    drv = webdriver.Chrome(options=opts, service=service)
    drv.set_page_load_timeout(30)
    try:
        yield drv
    finally:
        drv.quit()


def _wait(drv: webdriver.Chrome, js: str, timeout: float = 20) -> object:
    """Until `js` returns something true (errors while the next page loads are retried)."""
    return WebDriverWait(drv, timeout, ignored_exceptions=(JavascriptException,)).until(
        lambda d: d.execute_script(js))


def _shot(drv: webdriver.Chrome, name: str, full: bool = True) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    if full:  # the whole page, not just the window
        h = drv.execute_script("return document.documentElement.scrollHeight")
        drv.set_window_size(1400, min(max(int(h), 1000), 4000))
    drv.save_screenshot(str(SHOTS / f"{name}.png"))
    drv.set_window_size(1400, 1000)


def _no_alert(drv: webdriver.Chrome) -> None:
    with pytest.raises(NoAlertPresentException):
        drv.switch_to.alert.text  # noqa: B018
    assert drv.execute_script("return window.__xss === undefined")


def test_runs_page_and_compare(browser: webdriver.Chrome, base: str, ui_data: UIData) -> None:
    browser.get(base + "/")
    rows = browser.find_elements(By.CSS_SELECTOR, "table.runs tbody tr")
    assert len(rows) == 3
    assert "search-a" in browser.page_source and "sim" in rows[-1].text
    _shot(browser, "runs")
    for rid in (ui_data.run, ui_data.live_run):
        browser.find_element(By.CSS_SELECTOR, f'input[name=run][value="{rid}"]').click()
    browser.find_element(By.ID, "compare-btn").click()
    _wait(browser, "return document.getElementById('compare').dataset.rendered === '1'")
    paths = browser.find_elements(By.CSS_SELECTOR, "#chart-n path.best")
    assert len(paths) == 2
    href = browser.find_element(By.ID, "csv").get_attribute("href")
    assert sorted(href.split("?", 1)[1].split("&")) == [f"run={ui_data.run}",
                                                        f"run={ui_data.live_run}"]
    _shot(browser, "compare")


def test_run_page_draws_curves_and_polls_a_live_run(browser: webdriver.Chrome, base: str,
                                                    ui_data: UIData) -> None:
    browser.get(f"{base}/run/{ui_data.run}")
    _wait(browser, "return document.getElementById('run').dataset.rendered")
    for chart in ("chart-n", "chart-t"):
        assert browser.find_elements(By.CSS_SELECTOR, f"#{chart} path.best")
        assert len(browser.find_elements(By.CSS_SELECTOR, f"#{chart} circle")) > 100
    assert browser.find_elements(By.CSS_SELECTOR, "#chart-stage rect")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#chart-success path.best")) >= 4
    assert len(browser.find_elements(By.CSS_SELECTOR, "#islands-table tbody tr")) == 4
    assert "llm-diff@model-a" in browser.find_element(By.ID, "ops-table").text
    assert browser.find_element(By.ID, "live").get_attribute("hidden") is not None
    _shot(browser, "run")
    browser.get(f"{base}/run/{ui_data.live_run}")
    _wait(browser, "return document.getElementById('run').dataset.rendered")
    assert browser.find_element(By.ID, "live").is_displayed()  # running: it polls
    before = browser.find_element(By.CSS_SELECTOR, '[data-f="runtimes"]').text
    store = Store.open(ui_data.url, create=False)
    seed = store.list_runtimes(ui_data.live_run)[0]
    store.add_runtime(ui_data.live_run, seed.spec, generation=1, operator="gp",
                      parents=[(seed.id, "parent")])
    store.close()
    WebDriverWait(browser, 15).until(  # the page polls every 5 s
        lambda d: d.find_element(By.CSS_SELECTOR, '[data-f="runtimes"]').text
        == str(int(before) + 1))


def test_lineage_of_200_runtimes_click_through_to_a_node(browser: webdriver.Chrome, base: str,
                                                         ui_data: UIData) -> None:
    browser.get(f"{base}/run/{ui_data.run}/lineage")
    _wait(browser, "return window.sdsLineage && window.sdsLineage.rendered")
    assert browser.execute_script("return window.sdsLineage.count") == 200
    assert "200 of 200 runtimes match" in browser.find_element(By.ID, "match").text
    _shot(browser, "lineage", full=False)
    # filter by outcome: only failures match, the tree stays whole
    Select(browser.find_element(By.ID, "f-status")).select_by_value("failed")
    matched = _wait(browser, "return window.sdsLineage.matched < 200 && window.sdsLineage.matched")
    assert 0 < matched < 200 and browser.execute_script("return window.sdsLineage.count") == 200
    _shot(browser, "lineage_failed", full=False)
    Select(browser.find_element(By.ID, "f-status")).select_by_value("")
    # open a deep node by clicking it on the canvas
    data = browser.execute_script(
        f"return fetch('/api/run/{ui_data.run}/lineage').then(r => r.json())")
    n = data["nodes"]
    target = max(range(len(n["id"])), key=lambda i: (n["gen"][i], n["id"][i]))
    rid = n["id"][target]
    browser.execute_script(f"window.sdsLineage.centerOn({rid})")
    x, y = browser.execute_script(f"return window.sdsLineage.screenPos({rid})")
    canvas = browser.find_element(By.ID, "tree")
    w, h = canvas.size["width"], canvas.size["height"]
    ActionChains(browser).move_to_element_with_offset(canvas, int(x - w / 2),
                                                      int(y - h / 2)).click().perform()
    WebDriverWait(browser, 10).until(lambda d: d.current_url.endswith(f"/runtime/{rid}"))
    assert f"Runtime r{rid}" in browser.find_element(By.TAG_NAME, "h1").text
    # and back: the runtime's "show in the lineage tree" centres it
    browser.find_element(By.PARTIAL_LINK_TEXT, "show in the lineage tree").click()
    _wait(browser, "return window.sdsLineage && window.sdsLineage.rendered")
    x, y = browser.execute_script(f"return window.sdsLineage.screenPos({rid})")
    canvas = browser.find_element(By.ID, "tree")
    assert abs(x - canvas.size["width"] / 2) < 2 and abs(y - canvas.size["height"] / 2) < 2


def test_program_tree_and_program_with_diff(browser: webdriver.Chrome, base: str,
                                            ui_data: UIData) -> None:
    browser.get(f"{base}/run/{ui_data.run}/lineage?kind=programs")
    _wait(browser, "return window.sdsLineage && window.sdsLineage.rendered")
    assert browser.execute_script("return window.sdsLineage.count") > 100
    _shot(browser, "program_tree", full=False)
    data = browser.execute_script(
        f"return fetch('/api/run/{ui_data.run}/lineage?kind=programs').then(r => r.json())")
    pid = next(i for i, p, op in zip(data["nodes"]["id"], data["nodes"]["parent"],
                                     data["nodes"]["op"]) if p and op == "llm-diff")
    browser.get(f"{base}/program/{pid}")
    diff = browser.find_element(By.ID, "diff")
    assert "@@" in diff.text and diff.find_elements(By.CSS_SELECTOR, ".gi, .gd")
    assert "EVOLVE-BLOCK-START" in browser.find_element(By.ID, "code").text
    assert "Prompt" in browser.page_source and "tokens in" in browser.page_source
    _shot(browser, "program")


def test_runtime_page_copy_export(browser: webdriver.Chrome, base: str,
                                  ui_data: UIData) -> None:
    browser.get(f"{base}/run/{ui_data.run}")
    _wait(browser, "return document.getElementById('run').dataset.rendered")
    best = browser.execute_script(
        f"return fetch('/api/run/{ui_data.run}').then(r => r.json()).then(d => d.card.best_runtime)")
    browser.get(f"{base}/runtime/{best}")
    cmd = browser.find_element(By.ID, "export-cmd").text
    assert cmd.startswith(f"sds export {best} --db sqlite:///") and "--out" in cmd
    btn = browser.find_element(By.ID, "copy-export")
    btn.click()
    WebDriverWait(browser, 5).until(lambda d: btn.get_attribute("data-copied") is not None)
    assert browser.find_elements(By.CSS_SELECTOR, "table.wl td.num")
    _shot(browser, "runtime")


def test_evaluation_with_llm_prompt_and_the_xss_case(browser: webdriver.Chrome, base: str,
                                                     ui_data: UIData) -> None:
    browser.get(f"{base}/evaluation/{ui_data.xss_eval}")
    _no_alert(browser)
    prompt = browser.find_element(By.CSS_SELECTOR, ".llm pre.prompt").text
    assert '</textarea></pre><script>window.__xss = 1; alert("xss")</script>' in prompt
    assert "</textarea>" in browser.find_element(By.CSS_SELECTOR, ".llm pre.reply").text
    assert "<script>" in browser.find_element(By.ID, "error").text
    _shot(browser, "evaluation")
    for url in (f"/program/{ui_data.xss_program}", f"/runtime/{ui_data.xss_runtime}", "/",
                f"/run/{ui_data.xss_run}", f"/run/{ui_data.xss_run}/lineage"):
        browser.get(base + url)
        _no_alert(browser)
        assert "<script>" in browser.find_element(By.TAG_NAME, "body").text, url
    browser.get(f"{base}/program/{ui_data.xss_program}")
    _shot(browser, "xss_program")


def test_unknown_id_is_a_404_page(browser: webdriver.Chrome, base: str) -> None:
    browser.get(f"{base}/runtime/987654")
    assert "404" in browser.find_element(By.TAG_NAME, "h1").text
    assert "Traceback" not in browser.page_source
