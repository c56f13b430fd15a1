"""Training scripts (installed package): `eva-train-idm` = training.train_idm:main."""
