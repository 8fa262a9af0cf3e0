"""The federation directory: who is on the bus, with which keys, roles and topics, and when.

Modelled on TUF's root metadata. A directory version is a JSON document (``model``) signed by a
threshold of admin keys; a client pins a first version and moves forward one version at a time,
each new version signed by a threshold of both the old and the new admin keys (``trust``). Every
accepted version is kept, so a record is judged by the directory in force when it was published
(``history``). Drafts of the next version are made by small editing operations (``edit``).
"""
