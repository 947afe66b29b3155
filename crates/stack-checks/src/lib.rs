//! Tests only: see `tests/`. They check the files under `deploy/`, `dashboards/` and
//! `docker-compose.yml` with the real tools those files are for. A test whose tool is missing
//! prints a note and passes — unless `FAULTLINE_REQUIRE_EXTERNAL_TESTS` is set (as `.ci/run`
//! does), in which case it fails.
