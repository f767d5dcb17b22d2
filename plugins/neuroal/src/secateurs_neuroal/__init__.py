"""NeuroAL for secateurs: neuron-alignment block-wise and row-wise sparsity allocation."""
