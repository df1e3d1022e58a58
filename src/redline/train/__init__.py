"""Trainers: SFT (demonstrations, critic), and the methods built on them."""
