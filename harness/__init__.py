"""Support code shared by the test suite (tests/) and the benchmarks (bench/): server
launchers, throwaway PostgreSQL and HAProxy, a browser, and the API helpers both use.
"""
