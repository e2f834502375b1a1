"""The experiments' command line, above the library: argument parsing and `--set` overrides
(`config`), run directories, process checks and report writing (`runs`), and the experiments'
CPU-scale presets (`presets`). `import pdjax` does not load it and no library module imports it;
the scripts in `experiments/` do (`from pdjax.cli import presets, runs`)."""
