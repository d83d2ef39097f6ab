"""Helpers the test modules share: starting the project's commands, the ROS peer, the static import walker.

Test modules import helpers from here (or data builders from tests/fixtures/), never from another test
module: `tests/test_architecture.py::test_no_test_module_imports_another` holds that.
"""
