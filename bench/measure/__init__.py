"""What is measured: time, memory, FLOPs, profiles, accuracy, and the figures derived from them."""
