"""``--instrument`` / a pipeline's ``instrument:`` that is unknown is refused with the known names.

Issue reproduction: ``pipetask build -p cpBias.yaml --instrument kast_blu`` (and a pipeline file
with ``instrument: kast_blu``) were accepted silently; the instrument's config overrides simply
did not apply.
"""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from butler import Butler
from pipeline.cli import pipetask
from pipeline.definitions import builtin_instrument_names, check_instrument_name, find_pipeline_file
from pipeline.exceptions import PipelineDefinitionError
from pipeline.instruments import BUILTIN_INSTRUMENTS, register_instrument


def _invoke(*args):
    return CliRunner().invoke(pipetask, [str(a) for a in args])


def test_builtin_names_are_the_instruments_package_ones():
    """The framework lists the shipped camera descriptions without importing the instruments."""
    assert set(builtin_instrument_names()) >= set(BUILTIN_INSTRUMENTS)


def test_build_refuses_unknown_instrument_with_suggestion(tmp_path):
    """``pipetask build``: exit 1, the value, the closest name and the known names; good names pass."""
    r = _invoke("build", "-p", "cpBias.yaml", "--instrument", "kast_blu")
    assert r.exit_code == 1
    assert "--instrument: unknown instrument 'kast_blu' (did you mean 'kast_blue'?)" in r.output
    assert "(efosc2, kast_blue, megacam, testcam" in r.output
    assert "Traceback" not in r.output
    # a pipeline file's instrument: the file is named
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"description: x\ninstrument: megacamm\nimports: [{find_pipeline_file('cpBias.yaml')}]\n")
    r = _invoke("build", "-p", bad)
    assert r.exit_code == 1 and f"pipeline {bad}: unknown instrument 'megacamm'" in r.output
    assert "did you mean 'megacam'?" in r.output
    # known forms: a name, the LSST dotted form, a camera YAML file
    for good in ("megacam", "pipeline.instruments.megacam", "KAST_BLUE"):
        r = _invoke("build", "-p", "cpBias.yaml", "--instrument", good)
        assert r.exit_code == 0, r.output
    camera = tmp_path / "mycam.yaml"
    camera.write_text("name: mycam\n")
    check_instrument_name(str(camera))
    with pytest.raises(PipelineDefinitionError, match="unknown instrument 'nothing.yaml'"):
        check_instrument_name("nothing.yaml")


def test_qgraph_refuses_instrument_not_registered_in_repository(tmp_path):
    """With a repository, the instrument must be registered there (built in or not)."""
    Butler.create(tmp_path / "repo")
    butler = Butler(tmp_path / "repo", writeable=True)
    register_instrument(butler, "kast_blue")
    repo = tmp_path / "repo"
    common = ("-b", repo, "-p", "cpBias.yaml", "-i", "kast_blue/raw/all", "-o", "u/test")
    r = _invoke("qgraph", *common, "--instrument", "efosc2")
    assert r.exit_code == 1
    assert (
        f"--instrument: unknown instrument 'efosc2': it is not registered in {repo} (registered: kast_blue); "
        f"register it with `butler register-instrument {repo} efosc2`"
    ) in r.output
    r = _invoke("run", *common, "--instrument", "kast_bleu")
    assert r.exit_code == 1 and "unknown instrument 'kast_bleu' (did you mean 'kast_blue'?)" in r.output
    # nothing was created by the refused run
    assert "u/test" not in set(Butler(repo).registry.query_collections())
    # the registered instrument passes the check (the graph is then empty: no raws)
    r = _invoke("qgraph", *common, "--instrument", "kast_blue")
    assert "unknown instrument" not in r.output
