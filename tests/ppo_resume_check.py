"""Run under `accelerate launch` by tests/test_launch.py: a 4-step PPO stage (PTX on, a checkpoint every 2 steps)
into argv[2]; with a third argument "die" the run is stopped inside its 4th step, after the checkpoint."""
import sys
from pathlib import Path

from safealign import world
from safealign.methods import ppo


def main(root: Path, out: Path, die: bool) -> None:
    cfg = ppo.PPOConfig(steps=4, rollout_batch=4, max_new_tokens=8, actor_lr=1e-3, critic_lr=1e-3, save_every=2,
                        ptx_coeff=1.0, ptx_source="safe-answers")
    if die:
        real, calls = ppo.ppo_step, []

        def dies_in_step_4(*args, **kw):
            calls.append(1)
            if len(calls) == 4:
                raise SystemExit(3)
            return real(*args, **kw)
        ppo.ppo_step = dies_in_step_4
    rows = world.build()["train"][:16]
    ppo.train_ppo(cfg, root / "sft", root / "rm", root / "cm", rows, "USER: {input} ASSISTANT:", out, seed=0)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), len(sys.argv) > 3)
