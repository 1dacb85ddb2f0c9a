"""Tries to write a file outside its working directory; the file must not appear."""
import os

for path in ("__TARGET__", "/tmp/__TAG__.txt"):
    try:
        with open(path, "w") as f:
            f.write("escaped")
    except OSError as e:
        print("write failed:", path, e)
os.makedirs("inside", exist_ok=True)  # its own work dir stays writable
with open("inside/ok.txt", "w") as f:
    f.write("fine")
raise RuntimeError("done writing")
