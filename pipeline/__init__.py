"""The whole pipeline in one command: demonstrations -> LoRA fit -> merge -> export -> evaluation -> drive.

    python -m pipeline --out demo
"""
