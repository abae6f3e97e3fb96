"""crashcheck: every state a power loss can leave a queue in, enumerated and checked.

An ALICE-style checker ("All File Systems Are Not Created Equal", OSDI 2014) built for
dirqueue, in the project's own tests (no dm-log-writes on this kernel):

- :mod:`crashcheck._recorder` records the file-system calls one queue operation makes
  (the engine's ``os`` calls and its ``_fs`` primitives that go through ctypes), with
  paths relative to the queue, the bytes written and every fsync/syncfs barrier;
- :mod:`crashcheck._states` turns a trace into the states a crash could leave, under
  two persistence models (ext4 data=ordered-like, and a weaker one);
- :mod:`crashcheck._check` builds each state in a scratch directory and checks it with
  the engine's own repair, fsck and pickup;
- :mod:`crashcheck._scenarios` holds the operations traced;
- ``python -m crashcheck`` (``make crashcheck``, ``make crashcheck-sample``) runs it all.

It lives beside the tests, not in the package: it is a test tool, it monkeypatches
``os`` while it records, and nothing in a deployed queue needs it.
"""
