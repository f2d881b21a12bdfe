"""NeuMF in PyTorch Lightning: plain model, tensor DataModule, Lightning system, baselines."""
