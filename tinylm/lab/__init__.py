"""The lab: reductionism and emergence as experiments that run in minutes.

- ``heads``: the reductionist tools — attention patterns per layer and head, and
  the loss change when one head is ablated (``tinylm inspect``).
- ``induction``: induction heads appear in a phase change (Olsson et al. 2022).
- ``grokking``: generalisation long after memorisation (Power et al. 2022).
- ``scaling``: loss as a power law in model size (Kaplan et al. 2020).
- ``report`` and ``plots``: results.json always, PNG figures when matplotlib is installed.

Each experiment is a frozen config dataclass and a ``run_*`` function returning a
JSON-able dict whose ``signature`` says whether the published effect was reproduced.
"""
