"""The test suite: tests/ mirrors lib/, plus end-to-end runs through papermill (see pytest.ini for the markers)."""
