PRAGMA user_version=3;
BEGIN TRANSACTION;
CREATE TABLE amendments (
    arrival             INTEGER PRIMARY KEY AUTOINCREMENT,
    producer_id         TEXT NOT NULL,
    amendment_record_id TEXT NOT NULL,
    kind                TEXT NOT NULL CHECK (kind IN ('correction', 'retraction')),
    target_record_id    TEXT,
    status              TEXT NOT NULL CHECK (status IN
        ('pending', 'applied', 'unreadable', 'refused', 'withdrawn')),
    key_id              BLOB,
    sequence            INTEGER,
    digest              BLOB,
    topic               TEXT,
    kafka_partition     INTEGER,
    kafka_offset        INTEGER,
    created_at          TEXT,
    appended_at         TEXT,
    amended_at          TEXT,
    reason              TEXT NOT NULL,
    replacement_kind    TEXT,
    outcome             TEXT NOT NULL,
    rule_id             TEXT NOT NULL,
    policy_hash         TEXT NOT NULL,
    redacted_fields     TEXT NOT NULL,
    tlp                 TEXT,
    classification      TEXT,
    force_area          TEXT,
    occurred_at         TEXT,
    payload             TEXT,
    received_at         TEXT NOT NULL,
    applied_at          TEXT,
    UNIQUE (producer_id, amendment_record_id)
);
INSERT INTO "amendments" VALUES(1,'cst','6513270e-269e-4d37-b2a7-4de452e6b438','correction','b8feac10-082b-41a8-a439-a0ba84c7a452','applied',X'81D041F4F15173B918C9E1748970D009',3,X'A2C142500D4422B3382D81735121850F88F05A5BFF46372BFEEDF9E20979E91D','sim.sightings',0,3,'2026-12-02T03:22:35.945703Z','2026-12-02T03:22:35.947464Z','2026-12-02T03:22:35.944853Z','typo',NULL,'none','','','[]',NULL,NULL,NULL,NULL,NULL,'2026-12-02T03:22:35.980476Z',NULL);
INSERT INTO "amendments" VALUES(2,'cst','6018366c-f658-47a7-9ed3-4fe53a096533','retraction','869e43a8-8b9b-468b-b9e7-c612c48f5ff7','applied',X'81D041F4F15173B918C9E1748970D009',4,X'E1E0606EC2893E609750FC59E12DF3BF78A1CE1B061EC2038E64E161B016E27C','sim.sightings',0,4,'2026-12-02T03:22:35.948963Z','2026-12-02T03:22:35.950004Z','2026-12-02T03:22:35.948388Z','duplicate',NULL,'retract','','','[]',NULL,NULL,NULL,NULL,NULL,'2026-12-02T03:22:35.980476Z',NULL);
CREATE TABLE chain (
    producer_id     TEXT NOT NULL,
    topic           TEXT NOT NULL,
    kafka_partition INTEGER NOT NULL,
    epoch           TEXT NOT NULL,
    last_sequence   INTEGER NOT NULL,
    last_digest     BLOB NOT NULL,
    gaps            TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    PRIMARY KEY (producer_id, topic, kafka_partition, epoch)
);
INSERT INTO "chain" VALUES('cst','sim.sightings',0,'81d041f4f15173b918c9e1748970d009',4,X'E1E0606EC2893E609750FC59E12DF3BF78A1CE1B061EC2038E64E161B016E27C','[]','2026-12-02T03:22:35.980476Z');
CREATE TABLE feeds (
    producer_id       TEXT NOT NULL,
    topic             TEXT NOT NULL,
    last_heartbeat_at TEXT NOT NULL,
    interval_ms       INTEGER NOT NULL,
    PRIMARY KEY (producer_id, topic)
);
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
INSERT INTO "meta" VALUES('schema_version','3');
CREATE TABLE offsets (
    group_id        TEXT NOT NULL,
    topic           TEXT NOT NULL,
    kafka_partition INTEGER NOT NULL,
    next_offset     INTEGER NOT NULL,
    PRIMARY KEY (group_id, topic, kafka_partition)
);
INSERT INTO "offsets" VALUES('sim.herts-police','sim.sightings',0,5);
CREATE TABLE quarantine (
    topic           TEXT NOT NULL,
    kafka_partition INTEGER NOT NULL,
    kafka_offset    INTEGER NOT NULL,
    raw_prefix      BLOB NOT NULL,
    raw_size        INTEGER NOT NULL,
    raw_digest      BLOB NOT NULL,
    reason          TEXT NOT NULL,
    message         TEXT NOT NULL,
    record_id       TEXT,
    producer_id     TEXT,
    authentic       INTEGER NOT NULL,
    quarantined_at  TEXT NOT NULL,
    PRIMARY KEY (topic, kafka_partition, kafka_offset)
);
CREATE TABLE record_versions (
    producer_id      TEXT NOT NULL,
    record_id        TEXT NOT NULL,
    version          INTEGER NOT NULL,
    change           TEXT NOT NULL CHECK (change IN ('original', 'correction', 'retraction')),
    source_record_id TEXT NOT NULL,
    key_id           BLOB,
    sequence         INTEGER,
    digest           BLOB,
    topic            TEXT,
    kafka_partition  INTEGER,
    kafka_offset     INTEGER,
    created_at       TEXT,
    appended_at      TEXT,
    amended_at       TEXT,
    reason           TEXT NOT NULL,
    outcome          TEXT NOT NULL
        CHECK (outcome IN ('store', 'redact', 'withhold', 'quarantine', 'retract')),
    rule_id          TEXT NOT NULL,
    policy_hash      TEXT NOT NULL,
    redacted_fields  TEXT NOT NULL,
    tlp              TEXT,
    classification   TEXT,
    force_area       TEXT,
    occurred_at      TEXT,
    payload          TEXT,
    withdrawn        INTEGER NOT NULL DEFAULT 0,
    recorded_at      TEXT NOT NULL,
    PRIMARY KEY (producer_id, record_id, version),
    FOREIGN KEY (producer_id, record_id) REFERENCES records (producer_id, record_id)
);
INSERT INTO "record_versions" VALUES('cst','b8feac10-082b-41a8-a439-a0ba84c7a452',1,'original','b8feac10-082b-41a8-a439-a0ba84c7a452',X'81D041F4F15173B918C9E1748970D009',0,X'F08BC89A4001114843F9DEC9BA906FA0727A7AFE139F7BB0A0D5B53199D68333','sim.sightings',0,0,'2026-12-02T03:22:35.937857Z','2026-12-02T03:22:35.939159Z',NULL,'','store','own-sightings','3a99f691727a42456bc96abf757c14c332d14ae4a59a383216276c8abfdd8c28','[]','GREEN','OFFICIAL','HERTFORDSHIRE','2026-09-01T02:54:00.000000Z','{"behaviours": ["LOITERING", "DRONE_OVERHEAD"], "description": "Person loitered opposite the entrance during the morning service. A small drone hovered over the car park for about ten minutes.", "grading": {"assessment": "B", "classification": "OFFICIAL", "handling_code": "P", "handling_conditions": [], "source_evaluation": "S1", "tlp": "GREEN"}, "observed_at": "2026-09-01T02:54:00Z", "persons": [{"approx_age": "30-40", "clothing": "hi-vis vest", "summary": "Female, medium build"}], "place": {"address_or_area": "Golders Green, Barnet", "force_area": "HERTFORDSHIRE", "latitude": 51.572, "longitude": -0.194, "site_kind": "SYNAGOGUE", "site_name": "Golders Green synagogue"}, "police_crime_reference": null, "record_id": "b8feac10-082b-41a8-a439-a0ba84c7a452", "reporter_ref": "CST-R-8524", "vehicles": []}',0,'2026-12-02T03:22:35.980476Z');
INSERT INTO "record_versions" VALUES('cst','b8feac10-082b-41a8-a439-a0ba84c7a452',2,'correction','6513270e-269e-4d37-b2a7-4de452e6b438',X'81D041F4F15173B918C9E1748970D009',3,X'A2C142500D4422B3382D81735121850F88F05A5BFF46372BFEEDF9E20979E91D','sim.sightings',0,3,'2026-12-02T03:22:35.945703Z','2026-12-02T03:22:35.947464Z','2026-12-02T03:22:35.944853Z','typo','store','own-sightings','3a99f691727a42456bc96abf757c14c332d14ae4a59a383216276c8abfdd8c28','[]','GREEN','OFFICIAL','HERTFORDSHIRE','2026-09-01T02:54:00.000000Z','{"behaviours": ["LOITERING", "DRONE_OVERHEAD"], "description": "Corrected description", "grading": {"assessment": "B", "classification": "OFFICIAL", "handling_code": "P", "handling_conditions": [], "source_evaluation": "S1", "tlp": "GREEN"}, "observed_at": "2026-09-01T02:54:00Z", "persons": [{"approx_age": "30-40", "clothing": "hi-vis vest", "summary": "Female, medium build"}], "place": {"address_or_area": "Golders Green, Barnet", "force_area": "HERTFORDSHIRE", "latitude": 51.572, "longitude": -0.194, "site_kind": "SYNAGOGUE", "site_name": "Golders Green synagogue"}, "police_crime_reference": null, "record_id": "b8feac10-082b-41a8-a439-a0ba84c7a452", "reporter_ref": "CST-R-8524", "vehicles": []}',0,'2026-12-02T03:22:35.980476Z');
INSERT INTO "record_versions" VALUES('cst','869e43a8-8b9b-468b-b9e7-c612c48f5ff7',1,'original','869e43a8-8b9b-468b-b9e7-c612c48f5ff7',X'81D041F4F15173B918C9E1748970D009',1,X'01EE1B9B966012D1FB6CE28973DF1B2202778744FFEA2FA8CCF4C5143AC54E1E','sim.sightings',0,1,'2026-12-02T03:22:35.940689Z','2026-12-02T03:22:35.941804Z',NULL,'','store','own-sightings','3a99f691727a42456bc96abf757c14c332d14ae4a59a383216276c8abfdd8c28','[]','GREEN','OFFICIAL','HERTFORDSHIRE','2026-09-01T01:26:00.000000Z','{"behaviours": ["PHOTOGRAPHING_CCTV_OR_SECURITY", "DRONE_OVERHEAD"], "description": "Person photographed the CCTV cameras and the security hut. A small drone hovered over the car park for about ten minutes.", "grading": {"assessment": "B", "classification": "OFFICIAL", "handling_code": "P", "handling_conditions": [], "source_evaluation": "S1", "tlp": "GREEN"}, "observed_at": "2026-09-01T01:26:00Z", "persons": [{"approx_age": "40-50", "clothing": "dark hooded top", "summary": "Female, medium build"}], "place": {"address_or_area": "Alwoodley, Leeds", "force_area": "HERTFORDSHIRE", "latitude": 53.853, "longitude": -1.545, "site_kind": "COMMUNITY_CENTRE", "site_name": "Leeds community centre"}, "police_crime_reference": null, "record_id": "869e43a8-8b9b-468b-b9e7-c612c48f5ff7", "reporter_ref": "CST-R-7209", "vehicles": []}',0,'2026-12-02T03:22:35.980476Z');
INSERT INTO "record_versions" VALUES('cst','869e43a8-8b9b-468b-b9e7-c612c48f5ff7',2,'retraction','6018366c-f658-47a7-9ed3-4fe53a096533',X'81D041F4F15173B918C9E1748970D009',4,X'E1E0606EC2893E609750FC59E12DF3BF78A1CE1B061EC2038E64E161B016E27C','sim.sightings',0,4,'2026-12-02T03:22:35.948963Z','2026-12-02T03:22:35.950004Z','2026-12-02T03:22:35.948388Z','duplicate','retract','retraction','3a99f691727a42456bc96abf757c14c332d14ae4a59a383216276c8abfdd8c28','[]',NULL,NULL,NULL,NULL,NULL,0,'2026-12-02T03:22:35.980476Z');
CREATE TABLE records (
    producer_id     TEXT NOT NULL,
    record_id       TEXT NOT NULL,
    kind            TEXT NOT NULL CHECK (kind IN ('sighting', 'incident')),
    topic           TEXT NOT NULL,
    kafka_partition INTEGER NOT NULL,
    kafka_offset    INTEGER NOT NULL,
    sequence        INTEGER NOT NULL,
    digest          BLOB NOT NULL CHECK (length(digest) = 32),
    key_id          BLOB,
    created_at      TEXT NOT NULL,
    appended_at     TEXT NOT NULL,
    status          TEXT NOT NULL
        CHECK (status IN ('live', 'retracted', 'withheld', 'quarantined', 'withdrawn')),
    version         INTEGER NOT NULL,
    content_version INTEGER NOT NULL,
    policy_hash     TEXT NOT NULL,
    rule_id         TEXT NOT NULL,
    action          TEXT NOT NULL
        CHECK (action IN ('store', 'redact', 'withhold', 'quarantine')),
    redacted_fields TEXT NOT NULL,
    tlp             TEXT,
    classification  TEXT,
    force_area      TEXT,
    occurred_at     TEXT,
    event_at        TEXT NOT NULL,
    payload         TEXT,
    stored_at       TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    -- record_id first: the judge's snapshot looks records up by id, whoever produced them.
    PRIMARY KEY (record_id, producer_id),
    CHECK ((payload IS NULL) = (action IN ('withhold', 'quarantine')))
);
INSERT INTO "records" VALUES('cst','b8feac10-082b-41a8-a439-a0ba84c7a452','sighting','sim.sightings',0,0,0,X'F08BC89A4001114843F9DEC9BA906FA0727A7AFE139F7BB0A0D5B53199D68333',X'81D041F4F15173B918C9E1748970D009','2026-12-02T03:22:35.937857Z','2026-12-02T03:22:35.939159Z','live',2,2,'3a99f691727a42456bc96abf757c14c332d14ae4a59a383216276c8abfdd8c28','own-sightings','store','[]','GREEN','OFFICIAL','HERTFORDSHIRE','2026-09-01T02:54:00.000000Z','2026-09-01T02:54:00.000000Z','{"behaviours": ["LOITERING", "DRONE_OVERHEAD"], "description": "Corrected description", "grading": {"assessment": "B", "classification": "OFFICIAL", "handling_code": "P", "handling_conditions": [], "source_evaluation": "S1", "tlp": "GREEN"}, "observed_at": "2026-09-01T02:54:00Z", "persons": [{"approx_age": "30-40", "clothing": "hi-vis vest", "summary": "Female, medium build"}], "place": {"address_or_area": "Golders Green, Barnet", "force_area": "HERTFORDSHIRE", "latitude": 51.572, "longitude": -0.194, "site_kind": "SYNAGOGUE", "site_name": "Golders Green synagogue"}, "police_crime_reference": null, "record_id": "b8feac10-082b-41a8-a439-a0ba84c7a452", "reporter_ref": "CST-R-8524", "vehicles": []}','2026-12-02T03:22:35.980476Z','2026-12-02T03:22:35.980476Z');
INSERT INTO "records" VALUES('cst','869e43a8-8b9b-468b-b9e7-c612c48f5ff7','sighting','sim.sightings',0,1,1,X'01EE1B9B966012D1FB6CE28973DF1B2202778744FFEA2FA8CCF4C5143AC54E1E',X'81D041F4F15173B918C9E1748970D009','2026-12-02T03:22:35.940689Z','2026-12-02T03:22:35.941804Z','retracted',2,1,'3a99f691727a42456bc96abf757c14c332d14ae4a59a383216276c8abfdd8c28','own-sightings','store','[]','GREEN','OFFICIAL','HERTFORDSHIRE','2026-09-01T01:26:00.000000Z','2026-09-01T01:26:00.000000Z','{"behaviours": ["PHOTOGRAPHING_CCTV_OR_SECURITY", "DRONE_OVERHEAD"], "description": "Person photographed the CCTV cameras and the security hut. A small drone hovered over the car park for about ten minutes.", "grading": {"assessment": "B", "classification": "OFFICIAL", "handling_code": "P", "handling_conditions": [], "source_evaluation": "S1", "tlp": "GREEN"}, "observed_at": "2026-09-01T01:26:00Z", "persons": [{"approx_age": "40-50", "clothing": "dark hooded top", "summary": "Female, medium build"}], "place": {"address_or_area": "Alwoodley, Leeds", "force_area": "HERTFORDSHIRE", "latitude": 53.853, "longitude": -1.545, "site_kind": "COMMUNITY_CENTRE", "site_name": "Leeds community centre"}, "police_crime_reference": null, "record_id": "869e43a8-8b9b-468b-b9e7-c612c48f5ff7", "reporter_ref": "CST-R-7209", "vehicles": []}','2026-12-02T03:22:35.980476Z','2026-12-02T03:22:35.980476Z');
INSERT INTO "records" VALUES('cst','40cdc047-2f79-42cd-b709-8b1183428430','sighting','sim.sightings',0,2,2,X'78D334A483491DA30C51982D11F65C44CD14DA6B29C65370829B356F4B13516D',X'81D041F4F15173B918C9E1748970D009','2026-12-02T03:22:35.942982Z','2026-12-02T03:22:35.943885Z','withheld',1,1,'3a99f691727a42456bc96abf757c14c332d14ae4a59a383216276c8abfdd8c28','elsewhere','withhold','[]','GREEN','OFFICIAL_SENSITIVE','GREATER_MANCHESTER','2026-09-01T00:09:00.000000Z','2026-09-01T00:09:00.000000Z',NULL,'2026-12-02T03:22:35.980476Z','2026-12-02T03:22:35.980476Z');
CREATE TABLE rejudged (
    key_id     TEXT NOT NULL,
    since      TEXT NOT NULL,
    versions   INTEGER NOT NULL,
    amendments INTEGER NOT NULL,
    records    INTEGER NOT NULL,
    streams    INTEGER NOT NULL,
    applied_at TEXT NOT NULL,
    PRIMARY KEY (key_id, since)
);
CREATE INDEX records_event_at ON records (event_at);
CREATE INDEX records_position ON records (topic, kafka_partition, kafka_offset);
CREATE INDEX records_force_area ON records (force_area, event_at);
CREATE INDEX record_versions_key ON record_versions (key_id, appended_at);
CREATE INDEX amendments_by_id ON amendments (amendment_record_id);
CREATE INDEX amendments_pending ON amendments (target_record_id, status);
CREATE INDEX amendments_key ON amendments (key_id, appended_at);
DELETE FROM "sqlite_sequence";
INSERT INTO "sqlite_sequence" VALUES('amendments',2);
COMMIT;
