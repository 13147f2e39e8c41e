"""The rules' code= inputs: the static import closure against what Python actually imports.

The measurement is independent of the helper: every adapter script is run for real, in a forked
child, with a stand-in ``snakemake`` object that stops the script at its first use of the job
(params, input, ...), i.e. right after its imports; the ``unlearnbench`` modules then in
``sys.modules`` are what loading the script imported. The closure without function bodies must
equal that set exactly; the full closure (function-level imports too, which run when the stage
runs) may only add to it.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap

import pytest
from snakemake_runner import REPO
from unlearnbench import import_graph

SCRIPTS = sorted((REPO / "workflow" / "scripts").glob("*.py"))
RULES = REPO / "workflow" / "rules"

# Runs in a fresh interpreter: third-party libraries are imported once, then each script runs in
# a fork, so each child starts with no unlearnbench module loaded.
MEASURE = textwrap.dedent(
    """
    import json, os, runpy, sys
    import matplotlib; matplotlib.use("Agg")
    import matplotlib.pyplot, numpy, opacus, pandas, scipy.stats, torch, transformers  # noqa
    import datasets, jsonschema, safetensors.torch, tokenizers, tqdm.auto, yaml  # noqa

    class Stop(Exception):
        pass

    class Job:  # the script's `snakemake` object: only scriptdir is answered
        def __init__(self, scriptdir):
            self.scriptdir = scriptdir
        def __getattr__(self, name):
            raise Stop(name)

    results = {}
    for script in sys.argv[1:]:
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read)
            try:
                runpy.run_path(script, {"snakemake": Job(os.path.dirname(script))})
            except Stop:
                pass
            loaded = sorted(m for m in sys.modules if m.split(".")[0] == "unlearnbench")
            os.write(write, json.dumps(loaded).encode())
            os._exit(0)
        os.close(write)
        with os.fdopen(read) as pipe:
            results[script] = json.loads(pipe.read())
        os.waitpid(pid, 0)
    print(json.dumps(results))
    """
)


@pytest.fixture(scope="module")
def measured() -> dict[str, set[str]]:
    proc = subprocess.run(
        [sys.executable, "-c", MEASURE, *map(str, SCRIPTS)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {script: set(mods) for script, mods in json.loads(proc.stdout.splitlines()[-1]).items()}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_closure_equals_what_loading_the_script_imports(measured, script):
    loaded = measured[str(script)]
    assert "unlearnbench.stage" in loaded or "unlearnbench.logs" in loaded  # it did import
    assert import_graph.script_closure(script, lazy=False) == loaded
    assert import_graph.script_closure(script) >= loaded  # function-level imports only add


def test_every_rule_lists_the_closure_of_its_own_script():
    """code=code("<script>") in every rule that runs a script, naming that very script."""
    checked = 0
    for smk in sorted(RULES.glob("*.smk")):
        # A rule starts a line, or an indented one (chosen by a condition, e.g. HUB_MODEL).
        blocks = re.split(r"(?m)^(?=(?:    )?(?:use )?rule )", smk.read_text())
        for block in blocks:
            script = re.search(r'script:\s*\n\s*"\.\./scripts/(\w+)\.py"', block)
            if script is None:
                continue
            name = script.group(1)
            assert f'code=code("{name}")' in block, f"{smk.name}: {block.splitlines()[0]}"
            checked += 1
    assert checked == len(SCRIPTS)  # every adapter belongs to exactly one rule


def test_type_checking_imports_and_foreign_modules_do_not_count():
    source = textwrap.dedent(
        """
        from typing import TYPE_CHECKING
        import numpy
        from unlearnbench.seeding import derive_seed
        if TYPE_CHECKING:
            from unlearnbench.training import dp
        def later():
            from unlearnbench import canaries
        """
    )
    lazy = import_graph.imported_modules(source)
    assert lazy == {"unlearnbench", "unlearnbench.seeding", "unlearnbench.canaries"}
    eager = import_graph.imported_modules(source, lazy=False)
    assert eager == {"unlearnbench", "unlearnbench.seeding"}


def test_relative_imports_resolve_from_the_importing_module():
    source = "from ..fisher.woodbury import WoodburyFisher\nfrom . import registry\n"
    found = import_graph.imported_modules(source, "unlearnbench.unlearning.stage")
    assert found == {
        "unlearnbench",
        "unlearnbench.fisher",
        "unlearnbench.fisher.woodbury",
        "unlearnbench.unlearning",
        "unlearnbench.unlearning.registry",
    }


def test_test_only_references_are_in_no_closure():
    every = set().union(*(import_graph.script_closure(s) for s in SCRIPTS))
    assert not any("references" in m or "recursion" in m for m in every)
    files = import_graph.files_of(every)
    assert all(f.is_relative_to(import_graph.PACKAGE_DIR) for f in files)


def test_no_stage_imports_the_config_checks():
    """The config checks run before any job (the Snakefile), never in one: an adapter that
    imported them (as the tokenizer once did, through settings.hub_model) would rerun every
    job it feeds whenever a check is edited. The download target checks the cache on purpose."""
    for script in SCRIPTS:
        if script.stem == "download":
            continue
        closure = import_graph.script_closure(script)
        assert "unlearnbench.settings.rules" not in closure, script.stem
