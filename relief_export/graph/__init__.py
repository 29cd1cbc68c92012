"""torch.fx utilities every stage shares: tracing (``trace``), kinds of ops (``ops``), model
attributes (``attrs``), the builder of standard layers from weights (``layers``), prune masks
(``masks``) and the pass contract (``passes``). They import no stage."""
