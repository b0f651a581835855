"""Tests of configs, tasks, connections, pipeline YAML, the pipeline graph and pipetask build."""
