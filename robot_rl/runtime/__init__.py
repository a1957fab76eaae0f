"""Actor / learner runtime: the actor drives the robot and records, the learner trains; they run in one process
(:meth:`robot_rl.trainer.Trainer.train`, ``runtime=sync``) or as two processes (``runtime=async``,
:mod:`robot_rl.runtime.supervisor`) joined by :mod:`robot_rl.runtime.messages`."""
