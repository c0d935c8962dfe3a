"""Kept so that config files written as `from configs.base import *` keep working: it sets no key.

Every key's default and meaning is written once, in config.py (and model.GPTConfig for the model
section); `python train.py --help` lists them all. A preset sets only what differs from the defaults
(the GPT-2 124M reproduction), or derives from another preset:

    from configs.gpt2_124m import *   # noqa: F401,F403
    n_layer = 6
"""
