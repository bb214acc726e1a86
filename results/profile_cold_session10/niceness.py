"""The niceness Ray gives its worker processes (task worker and actor) against the launcher's, read from
/proc/<pid>/stat (field 19) inside each, and how it adds up: run under nice -n 10 with and without
RAY_worker_niceness set in the environment.

    RAY_AUTH_MODE=token nice -n 10 python results/profile_cold_session10/niceness.py
    RAY_worker_niceness=2 RAY_AUTH_MODE=token nice -n 10 python results/profile_cold_session10/niceness.py
"""
import os
import ray

def stat_nice(pid="self"):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(fields[16])  # field 19 of /proc/<pid>/stat (fields after the command: state is field 3)

@ray.remote(num_cpus=0)
def task_nice():
    return os.getpid(), stat_nice()

@ray.remote(num_cpus=0)
class Actor:
    def nice(self):
        return os.getpid(), stat_nice()

ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
actor = Actor.remote()
print(f"RAY_worker_niceness={os.environ.get('RAY_worker_niceness', '(unset)')}: launcher nice {stat_nice()}, "
      f"task worker {ray.get(task_nice.remote())}, actor {ray.get(actor.nice.remote())} (pid, nice)")
ray.shutdown()
