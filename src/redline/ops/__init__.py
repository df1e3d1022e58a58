"""Pure torch maths: losses, KL, advantages. Small functions of tensors, tested by hand."""
