"""Tests of the project itself: the import graph, every module importing alone, the README layout
and the test command's tool list."""
