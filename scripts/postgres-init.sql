-- First start of the docker-compose PostgreSQL: the MLflow and Prefect databases next to
-- RecoLab's own (POSTGRES_DB=recolab).
CREATE DATABASE mlflow;
CREATE DATABASE prefect;
