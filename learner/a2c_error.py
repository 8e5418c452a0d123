"""The A2C loss in DI-engine's API (`ding.rl_utils.a2c`), which the seed document names:

    loss = a2c_error(a2c_data(logit, action, value, adv, return_, weight))
    total = loss.policy_loss + value_coef * loss.value_loss - entropy_coef * loss.entropy_loss

for a categorical policy, with DI-engine's fields and semantics: `weight` scales all three
terms per sample (an importance or mask weight), and `entropy_loss` is the mean entropy H, a
bonus to maximise. troupe's learner uses the distribution-agnostic `losses.a2c_loss`, whose
optional weights scale the policy term only (V-trace's rho: the value targets carry their own
correction); for `weight=None` the two agree exactly (tested).
"""

from __future__ import annotations

from collections import namedtuple

import torch

a2c_data = namedtuple("a2c_data", ["logit", "action", "value", "adv", "return_", "weight"])
a2c_loss = namedtuple("a2c_loss", ["policy_loss", "value_loss", "entropy_loss"])


def a2c_error(data: a2c_data) -> a2c_loss:
    """A2C's policy-gradient, value and entropy terms, each a 0-dim tensor.

    Shapes (B: batch, N: actions):
        logit    [B, N]  action logits (gradients flow)
        action   [B]     actions taken (int64)
        value    [B]     V(s) (gradients flow)
        adv      [B]     advantages, treated as constants
        return_  [B]     value targets, treated as constants
        weight   [B] or None (= ones), treated as constant

    Returns a2c_loss(
        policy_loss  = -mean(log pi(a|s) * adv * weight),
        value_loss   =  mean((return_ - value)^2 * weight),
        entropy_loss =  mean(H(pi(.|s)) * weight))
    """
    logit, action, value, adv, return_, weight = data
    weight = torch.ones_like(value) if weight is None else weight.detach()
    dist = torch.distributions.Categorical(logits=logit)
    return a2c_loss(
        policy_loss=-(dist.log_prob(action) * adv.detach() * weight).mean(),
        value_loss=((return_.detach() - value).pow(2) * weight).mean(),
        entropy_loss=(dist.entropy() * weight).mean(),
    )
