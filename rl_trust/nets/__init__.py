"""The networks, in the order a batch meets them:

- `observations`: how each observation space is stored in the rollout and fed in;
- `encoders`: the built-in MLPs, the Nature CNN and the Dict / Tuple encoders;
- `families`: the action distributions, their closed-form math and derivatives;
- `actor_critic`: the autograd engine, heads on any extractor;
- `manual`: the built-in MLP with its backward written out (the fast engine);
- `build`: which of them a config gets, on which device (`make_policy`).
"""
