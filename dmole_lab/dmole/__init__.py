"""D-MoLE's own parts (docs/method.md section 2): the inter-modal curriculum and layer-wise
allocator (torch-free, :mod:`.allocation`) and the autoencoder router (:mod:`.router`).

Nothing is imported here, so ``dmole_lab.dmole.allocation`` loads without torch."""
