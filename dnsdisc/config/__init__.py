"""The server's config: the YAML file, the environment and the flags -> one frozen Config.

schema.py declares every key once (its parser from parsers.py, its flag, its environment
variable, whether a reload applies it); load.py reads a file and applies the environment and the
flags by that table; zones.py reads the zone files; cpus.py says what ``workers: auto`` means.

Words: a *key* is a place in the file (``dns.workers``); a *field* an attribute of Config
(``workers``); a *section* a mapping of keys in the file (``dns:``), and a Section one whose keys
make a single field (``etcd:`` -> EtcdSettings); *live* keys a reload applies, *restart* keys wait
for a restart.
"""
