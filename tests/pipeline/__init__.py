"""Tests of the pipeline framework: config, task API, definitions, pipeline graph, quantum graph, execution, pipetask."""
