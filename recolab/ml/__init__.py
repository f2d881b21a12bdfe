"""The learning subsystem: NeuMF, its Lightning system and data, baselines, fitting, feature
snapshots, evaluation, and the scorer (pure torch; nothing here knows SQL, MLflow or HTTP)."""
