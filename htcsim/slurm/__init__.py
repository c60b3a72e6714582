"""A policy in Slurm's terms and back: what a site that runs Slurm applies and reads.

Most clusters that tune a policy here already run Slurm. ``export`` turns a
policy (and a cluster file) into what a Slurm administrator applies: a
``slurm.conf`` fragment, an idempotent ``sacctmgr`` script and ``MAPPING.md``,
which says for every policy key which Slurm setting it became and whether the
translation is exact, approximate or impossible. ``import`` reads a site's
``slurm.conf`` (includes followed) and its accounting (``sacctmgr dump``,
``sacctmgr show qos``, or a script of ``sacctmgr`` commands) into a policy and
a cluster file, so that tuning starts from the policy the site runs today.

Modules: ``values`` (Slurm's value grammars: durations, TRES, host lists),
``conf_read`` (slurm.conf lines), ``sacctmgr_read`` (accounting inputs),
``names`` (workload ids <-> Slurm names), ``plan`` (what the export writes,
one row per policy key), ``map_order``, ``map_limits`` and ``map_nodes`` (the
translation, a part of the policy each), ``mapping`` (the whole plan and
MAPPING.md), ``conf_write`` and ``sacctmgr_write`` (the files), ``export``
(the directory), ``to_policy`` and ``to_cluster`` (the reverse), ``errors``.
"""
