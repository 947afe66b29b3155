-- Run once by the postgres image (mounted into /docker-entrypoint-initdb.d by
-- docker-compose.yml) when its data volume is empty, as the POSTGRES_USER (faultline), who
-- then owns both databases. Each service owns its database, as in CONTRACT.md; each applies
-- its own migrations on start-up.
CREATE DATABASE orders;
CREATE DATABASE fulfillment;
