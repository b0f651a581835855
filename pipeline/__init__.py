"""ccdflow pipelines: tasks, connections, quantum graphs, executors and the science tasks."""
