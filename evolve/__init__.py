"""sds evolution: config, controller, selection, operators, prompts and the `sds` CLI."""
