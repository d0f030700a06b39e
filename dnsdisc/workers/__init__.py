"""DNS answered by worker processes that share the port, kept current by the main process.

Glossary:
- *worker*: one such process (``python -m dnsdisc.workers``); ``replica`` is its side,
  ``handle.Worker`` the main process's handle on it.
- *feed*: the numbered stream of messages from the main process to one worker, and its replies
  (``feed`` moves the bytes, ``protocol`` says what they mean).
- *fence*: a number shared in memory with one worker: the last message wholly in its socket
  buffer, which it applies before answering anything read after it.
- *snapshot*: INIT and every service, the first messages of a new worker's feed.
- *barrier*: what a registry write waits for, so that no worker answers from an older view
  (``barrier``).
- *pool*: the workers as the server sees them (``pool.WorkerPool``, an ``AnswerSink``).
"""
