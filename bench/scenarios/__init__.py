"""What one cell does: classify (infer / train step timing), finetune (det / seg training and scoring)."""
