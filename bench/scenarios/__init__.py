"""What one cell does: step (the infer / train step of any task, timed), finetune (det / seg training and scoring)."""
