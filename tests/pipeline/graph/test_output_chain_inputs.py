"""``-o CHAIN`` with other ``-i`` inputs than the chain has: refused (LSST: inputs differ) unless ``--rebase``.

The reproduction: a rerun ``-o CHAIN -i OTHER`` used to append OTHER to the chain silently.
"""

from __future__ import annotations

from typing import Any

import pytest

import _toy_tasks as toy
from pipeline.graph.collections import OutputCollectionError, resolve_output_collections


@pytest.fixture
def reg(toy_repo: Any) -> Any:
    butler, _ = toy_repo
    r = butler.registry
    r.register_run("other/run")
    r.register_run("calib/run")
    r.set_collection_chain("cam/defaults", ["calib/run", toy.TOY_RAW_RUN])
    # An output chain made by an earlier `-o u/out -i ToyCam/raw/all` (run 1).
    r.register_run("u/out/run1")
    r.set_collection_chain("u/out", ["u/out/run1", toy.TOY_RAW_RUN])
    return r


def test_same_inputs_or_none_are_accepted(reg: Any) -> None:
    c = resolve_output_collections(reg, inputs=[toy.TOY_RAW_RUN], output="u/out", timestamp="T2")
    assert c.chain == ["u/out/T2", "u/out/run1", toy.TOY_RAW_RUN]
    c = resolve_output_collections(reg, output="u/out", timestamp="T2")
    assert c.chain == ["u/out/T2", "u/out/run1", toy.TOY_RAW_RUN]


def test_contiguous_subsequence_of_the_flattened_chain(reg: Any) -> None:
    reg.set_collection_chain("u/out2", ["u/out/run1", "cam/defaults"])
    # Flattened, u/out2 = [u/out/run1, calib/run, ToyCam/raw/all]: both spellings match.
    for inputs in (["cam/defaults"], ["calib/run", toy.TOY_RAW_RUN], [toy.TOY_RAW_RUN]):
        c = resolve_output_collections(reg, inputs=inputs, output="u/out2", timestamp="T2")
        assert c.chain == ["u/out2/T2", "u/out/run1", "cam/defaults"]
    with pytest.raises(OutputCollectionError, match="inputs differ"):
        resolve_output_collections(reg, inputs=[toy.TOY_RAW_RUN, "calib/run"], output="u/out2")


def test_other_inputs_are_refused_without_rebase(reg: Any) -> None:
    with pytest.raises(OutputCollectionError, match="inputs differ") as exc:
        resolve_output_collections(reg, inputs=["other/run"], output="u/out")
    assert "--rebase" in str(exc.value) and "'u/out'" in str(exc.value)
    for mode in ({"extend_run": True}, {"replace_run": True}):
        with pytest.raises(OutputCollectionError, match="inputs differ"):
            resolve_output_collections(reg, inputs=["other/run", toy.TOY_RAW_RUN], output="u/out", **mode)
    assert list(reg.get_collection_chain("u/out")) == ["u/out/run1", toy.TOY_RAW_RUN]  # nothing written


def test_rebase_puts_output_runs_then_new_inputs_then_the_rest(reg: Any) -> None:
    c = resolve_output_collections(reg, inputs=["other/run"], output="u/out", timestamp="T2", rebase=True)
    assert c.chain == ["u/out/T2", "u/out/run1", "other/run", toy.TOY_RAW_RUN]
    assert c.inputs == ["other/run"]
    c = resolve_output_collections(reg, inputs=["other/run"], output="u/out", extend_run=True, rebase=True)
    assert c.run == "u/out/run1" and c.chain == ["u/out/run1", "other/run", toy.TOY_RAW_RUN]
    with pytest.raises(OutputCollectionError, match="does not start with"):
        resolve_output_collections(reg, inputs=["other/run"], output="u/out", output_run="elsewhere/r",
                                   rebase=True)
