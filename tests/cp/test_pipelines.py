"""The cp pipelines: LSST labels and dataset type names, and the cpFlat / cpPtc graph shapes."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.definitions import Pipeline

PIPELINES = Path(__file__).resolve().parents[2] / "pipelines"


def _names(pipe: Pipeline, label: str) -> dict[str, str]:
    conns = pipe.task_config(label).make_connections()
    return {n: c.name for n, c in conns.allConnections.items()}


def test_pipeline_definitions():
    bias = Pipeline.from_file(PIPELINES / "cpBias.yaml")
    assert list(bias.tasks) == ["cpBiasIsr", "cpBiasCombine"]
    assert _names(bias, "cpBiasIsr")["outputExposure"] == "cpBiasProc"
    assert _names(bias, "cpBiasCombine")["outputData"] == "bias"
    cfg = bias.task_config("cpBiasIsr")
    assert not cfg.doBias and not cfg.doDark and not cfg.doFlat and cfg.doOverscan
    dark = Pipeline.from_file(PIPELINES / "cpDark.yaml")
    assert _names(dark, "cpDarkCombine") == {"inputExpHandles": "cpDarkProc", "outputData": "dark"}
    assert dark.task_config("cpDarkCombine").exposureScaling == "DarkTime"
    assert "CR" in dark.task_config("cpDarkCombine").mask
    assert dark.task_config("cpDarkIsr").doBias
    flat = Pipeline.from_file(PIPELINES / "cpFlat.yaml")
    assert list(flat.tasks) == ["cpFlatIsr", "cpFlatMeasure", "cpFlatNorm", "cpFlatCombine"]
    assert _names(flat, "cpFlatNorm") == {"inputMDs": "cpFlatStatistics", "outputScales": "cpFlatNormScales",
                                          "outputExpScales": "cpFlatExpScales"}
    comb = _names(flat, "cpFlatCombine")
    assert comb == {"inputExpHandles": "cpFlatProc", "inputScales": "cpFlatExpScales", "outputData": "flat"}
    assert flat.task_config("cpFlatCombine").exposureScaling == "InputList"
    assert not flat.task_config("cpFlatIsr").doFlat
    ptc = Pipeline.from_file(PIPELINES / "cpPtc.yaml")
    assert list(ptc.tasks) == ["ptcIsr", "ptcExtract", "ptcSolve", "ptcPlot"]
    assert _names(ptc, "ptcExtract") == {"inputExp": "postISRCCD", "outputCovariances": "cpPtcPartial"}
    assert _names(ptc, "ptcSolve") == {"inputCovariances": "cpPtcPartial", "outputPtcDataset": "ptc"}
    assert ptc.task_config("ptcExtract").maximumRangeCovariancesAstier == 8
    for p in (bias, dark, flat, ptc):
        p.to_graph()   # validates storage classes and producers


def _repo(root: Path, n_det: int, n_exp: int):
    from butler import Butler, DatasetType, StoredFileInfo, Timespan

    Butler.create(root)
    butler = Butler(root, writeable=True)
    reg = butler.registry
    inst = "FlatCam"
    reg.insert_dimension_data("instrument", {"name": inst, "class_name": "", "camera_yaml": "",
                                             "detector_max": n_det})
    reg.insert_dimension_data("physical_filter", {"instrument": inst, "name": "r1", "band": "r"})
    reg.insert_dimension_data("detector", *[{"instrument": inst, "id": d, "full_name": f"D{d:02d}",
                                             "purpose": "SCIENCE"} for d in range(n_det)])
    t0 = 1_735_689_637 * 10**9
    reg.insert_dimension_data("day_obs", {"instrument": inst, "id": 20250101,
                                          "timespan": Timespan.from_ns(t0, t0 + 86_400 * 10**9)})
    reg.insert_dimension_data("exposure", *[
        {"instrument": inst, "id": e, "obs_id": f"F{e}", "exposure_time": 5.0 * (1 + e // 2),
         "dark_time": 5.0, "observation_type": "flat", "physical_filter": "r1", "day_obs": 20250101,
         "timespan": Timespan.from_ns(t0 + e * 60 * 10**9, t0 + e * 60 * 10**9 + 5 * 10**9)}
        for e in range(n_exp)])
    dt = DatasetType("raw", ("instrument", "exposure", "detector"), "Exposure")
    reg.register_dataset_type(dt)
    reg.register_run(f"{inst}/raw/all")
    refs = reg.insert_datasets(dt, [{"instrument": inst, "exposure": e, "detector": d}
                                    for e in range(n_exp) for d in range(n_det)], f"{inst}/raw/all")
    reg.insert_file_records([(r.id, StoredFileInfo(f"raw/{r.id.hex}.fits",
                                                   "pipeline.instruments.raw.RawFormatter", "Exposure", None, 0))
                             for r in refs])
    return butler, inst


def test_cpflat_graph_shape_40_detectors_10_flats(tmp_path):
    pytest.importorskip("pipeline.graph.builder")
    from pipeline.graph.builder import build_quantum_graph
    from pipeline.graph.collections import resolve_output_collections

    butler, inst = _repo(tmp_path / "repo", 40, 10)
    flat = Pipeline.from_file(PIPELINES / "cpFlat.yaml")
    flat.add_config_override("cpFlatIsr", "doBias", False)   # no certified bias in this repo
    colls = resolve_output_collections(butler.registry, inputs=[f"{inst}/raw/all"], output_run="u/flat/run")
    g = build_quantum_graph(butler, flat.to_graph(), collections=colls, where="")
    assert g.count_by_task() == {"cpFlatIsr": 400, "cpFlatMeasure": 400, "cpFlatNorm": 1, "cpFlatCombine": 40}
    (norm,) = g.quanta_for_task("cpFlatNorm")
    assert len(norm.inputs["inputMDs"]) == 400
    assert sorted(r.data_id["exposure"] for r in norm.outputs["outputExpScales"]) == list(range(10))
    for q in g.quanta_for_task("cpFlatCombine"):
        assert len(q.inputs["inputExpHandles"]) == 10 and len(q.inputs["inputScales"]) == 10
        assert q.data_id["physical_filter"] == "r1"
    ptc = Pipeline.from_file(PIPELINES / "cpPtc.yaml")
    ptc.add_config_override("ptcIsr", "doBias", False)
    colls = resolve_output_collections(butler.registry, inputs=[f"{inst}/raw/all"], output_run="u/ptc/run")
    g = build_quantum_graph(butler, ptc.to_graph(), collections=colls, where="detector < 3")
    assert g.count_by_task() == {"ptcIsr": 30, "ptcExtract": 3, "ptcSolve": 3, "ptcPlot": 3}
    for q in g.quanta_for_task("ptcExtract"):
        assert len(q.inputs["inputExp"]) == 10 and len(q.outputs["outputCovariances"]) == 10
