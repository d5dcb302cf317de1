"""Incidents become cases: a lifecycle on the row, an append-only event log, time limits.

``case_event`` is the truth; the lifecycle columns added to ``incident`` are a cache of the
replay of its events (``service.dispatch.lifecycle.apply`` writes both in one transaction).
``status`` stays, derived from ``state`` (a check), so Open311, layers and filters keep
working; ``closed_at`` is still set iff the status is closed.

Every incident starts its lifecycle in the database, however it is written (API, Open311,
bulk COPY, file import): a row trigger gives it a state (from ``status``: historic imports
keep theirs), the owning level (the community containing it, else the lowest containing
level) and the accept deadline; a statement trigger writes its first event, set-based (one
``INSERT ... SELECT`` per statement, a million-row COPY included): ``report`` for a new case,
``import`` for one filed with another status.

Event ids commit in id order: a statement trigger takes a transaction advisory lock before
any event id is drawn, so a listener that resumes after the last id it delivered never
misses one. ``pg_notify('wangge_case_events', <highest id of the statement>)`` wakes them.
"""

from alembic import op

revision = "0010"
down_revision = "0009"

STATES = ("reported", "registered", "dispatched", "signed", "handled", "closed", "cancelled")
OPEN_STATES = ("reported", "registered", "dispatched", "signed", "handled")
CATEGORIES = ("water", "gas", "street_light", "road", "sanitation", "public_order", "other")
PRIORITIES = ("urgent", "high", "normal")
STEPS = ("accept", "sign", "handle", "verify")
#: Any constant: the one lock every event insert takes (pg_advisory_xact_lock(bigint)).
EVENT_LOCK = 7_716_398_420_113

# Default time limits in minutes, wall clock. Accepting, signing for and verifying depend on
# urgency only; handling on the work: hours for gas or public order, days for a road.
STEP_MINUTES = {
    "accept": {"urgent": 15, "high": 30, "normal": 60},
    "sign": {"urgent": 30, "high": 60, "normal": 120},
    "verify": {"urgent": 120, "high": 480, "normal": 1440},
}
HANDLE_MINUTES = {
    "gas": (240, 480, 1440),
    "water": (240, 720, 1440),
    "street_light": (480, 720, 1440),
    "road": (1440, 2880, 7200),
    "sanitation": (240, 720, 1440),
    "public_order": (60, 240, 720),
    "other": (1440, 2880, 4320),
}


def _in(values: tuple[str, ...]) -> str:
    return "(" + ", ".join(f"'{v}'" for v in values) + ")"


def _seed_rows() -> str:
    rows = []
    for category in CATEGORIES:
        for i, priority in enumerate(PRIORITIES):
            for step in STEPS:
                if step == "handle":
                    minutes = HANDLE_MINUTES[category][i]
                else:
                    minutes = STEP_MINUTES[step][priority]
                rows.append(f"('{category}', '{priority}', '{step}', {minutes})")
    return ",\n".join(rows)


# What a first event carries (service.dispatch.lifecycle.initial_state reads it): for a new
# case what differs between cases (a million-row import builds it a million times); for an
# imported one with another state, its lifecycle whole.
REPORTED = """jsonb_build_object('category', n.category, 'priority', n.priority,
    'owner_level', n.owner_level, 'owner_area_path', n.owner_area_path, 'due_at', n.step_due_at)"""
#: A new case with nothing but the start: REPORTED describes it fully.
PLAIN_NEW = """n.state = 'reported' AND n.step = 'accept' AND n.assignee_code IS NULL
    AND NOT n.step_overdue AND NOT n.supervised AND n.escalations = 0 AND n.reopens = 0
    AND n.duplicate_of IS NULL AND n.satisfaction IS NULL AND n.dispatched_at IS NULL
    AND n.signed_at IS NULL AND n.handled_at IS NULL"""
SNAPSHOT = """jsonb_strip_nulls(jsonb_build_object(
    'category', n.category, 'priority', n.priority, 'state', n.state,
    'owner_level', n.owner_level, 'owner_area_path', n.owner_area_path,
    'assignee_path', n.assignee_path, 'step', n.step, 'due_at', n.step_due_at,
    'step_overdue', n.step_overdue, 'dispatched_at', n.dispatched_at,
    'signed_at', n.signed_at, 'handled_at', n.handled_at, 'closed_at', n.closed_at,
    'supervised', n.supervised, 'escalations', n.escalations, 'reopens', n.reopens,
    'duplicate_of', n.duplicate_of, 'satisfaction', n.satisfaction))"""


def upgrade() -> None:
    op.execute(
        f"""
        ALTER TABLE incident
            ADD COLUMN state text,
            ADD COLUMN priority text NOT NULL DEFAULT 'normal',
            ADD COLUMN owner_level text,
            ADD COLUMN owner_area_code text,
            ADD COLUMN owner_area_path text,
            ADD COLUMN assignee_kind text,
            ADD COLUMN assignee_code text,
            ADD COLUMN assignee_path text,
            ADD COLUMN step text,
            ADD COLUMN step_due_at timestamptz,
            ADD COLUMN step_overdue boolean NOT NULL DEFAULT false,
            ADD COLUMN dispatched_at timestamptz,
            ADD COLUMN signed_at timestamptz,
            ADD COLUMN handled_at timestamptz,
            ADD COLUMN supervised boolean NOT NULL DEFAULT false,
            ADD COLUMN escalations integer NOT NULL DEFAULT 0,
            ADD COLUMN reopens integer NOT NULL DEFAULT 0,
            -- No foreign key: a bulk COPY would pay a lookup per row; the API checks it.
            ADD COLUMN duplicate_of bigint,
            ADD COLUMN satisfaction smallint,
            -- The number of events: If-Match compares it (ETag "<version>").
            ADD COLUMN version integer NOT NULL DEFAULT 1;

        CREATE TABLE case_time_limit (
            category text NOT NULL,
            priority text NOT NULL,
            step text NOT NULL,
            minutes integer NOT NULL,
            updated_by text,
            updated_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (category, priority, step),
            CONSTRAINT case_time_limit_category_check CHECK (category IN {_in(CATEGORIES)}),
            CONSTRAINT case_time_limit_priority_check CHECK (priority IN {_in(PRIORITIES)}),
            CONSTRAINT case_time_limit_step_check CHECK (step IN {_in(STEPS)}),
            CONSTRAINT case_time_limit_minutes_check CHECK (minutes > 0)
        );
        INSERT INTO case_time_limit (category, priority, step, minutes) VALUES
        {_seed_rows()};

        -- Append-only. No foreign key to incident (a bulk import would pay a lookup per
        -- event): events are written under the incident's row lock or by its insert
        -- trigger, and a deleted incident takes its events with it (trigger below).
        CREATE TABLE case_event (
            id bigint PRIMARY KEY GENERATED ALWAYS AS IDENTITY,
            incident_id bigint NOT NULL,
            seq integer NOT NULL,
            at timestamptz NOT NULL DEFAULT now(),
            action text NOT NULL,
            actor_token_id text,
            actor_role text NOT NULL,
            actor_area_code text,
            from_state text,
            to_state text NOT NULL,
            from_owner_area_code text,
            to_owner_area_code text,
            assignee_kind text,
            assignee_code text,
            note text,
            reason text,
            attachments text[] NOT NULL DEFAULT '{{}}',
            data jsonb NOT NULL DEFAULT '{{}}',
            CONSTRAINT case_event_incident_id_seq_key UNIQUE (incident_id, seq),
            CONSTRAINT case_event_seq_check CHECK (seq >= 1),
            CONSTRAINT case_event_from_state_check CHECK (from_state IN {_in(STATES)}),
            CONSTRAINT case_event_to_state_check CHECK (to_state IN {_in(STATES)})
        );

        CREATE FUNCTION case_event_lock() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            -- Held to commit: transactions writing events commit in the order their ids
            -- were drawn, so "every event after id N" is never missing one that commits late.
            PERFORM pg_advisory_xact_lock({EVENT_LOCK});
            RETURN NULL;
        END $$;
        CREATE TRIGGER case_event_lock BEFORE INSERT ON case_event
            FOR EACH STATEMENT EXECUTE FUNCTION case_event_lock();

        CREATE FUNCTION notify_case_events() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE
            last bigint := (SELECT max(id) FROM new_events);
        BEGIN
            IF last IS NOT NULL THEN
                PERFORM pg_notify('wangge_case_events', last::text);
            END IF;
            RETURN NULL;
        END $$;
        CREATE TRIGGER case_event_notify AFTER INSERT ON case_event
            REFERENCING NEW TABLE AS new_events
            FOR EACH STATEMENT EXECUTE FUNCTION notify_case_events();
        """
    )
    # Existing incidents: the state their status implies, owned by the community (else the
    # lowest level) containing them, one import event each.
    op.execute(
        f"""
        UPDATE incident SET
            state = CASE status WHEN 'new' THEN 'reported' WHEN 'open' THEN 'registered'
                    ELSE 'closed' END,
            owner_level = CASE WHEN community_code IS NOT NULL THEN 'community'
                          WHEN district_code IS NOT NULL THEN 'district'
                          WHEN city_code IS NOT NULL THEN 'city' END,
            owner_area_code = coalesce(community_code, district_code, city_code),
            owner_area_path = CASE WHEN city_code IS NOT NULL THEN array_to_string(
                (string_to_array(area_path, '/'))[1:CASE WHEN community_code IS NOT NULL THEN 3
                    WHEN district_code IS NOT NULL THEN 2 ELSE 1 END], '/') END;
        UPDATE incident i SET step = 'accept',
            step_due_at = i.reported_at + make_interval(mins => l.minutes)
        FROM case_time_limit l
        WHERE i.state IN ('reported', 'registered')
          AND l.category = i.category AND l.priority = i.priority AND l.step = 'accept';
        ALTER TABLE incident ALTER COLUMN state SET NOT NULL;
        INSERT INTO case_event (incident_id, seq, at, action, actor_token_id, actor_role,
                                actor_area_code, to_state, to_owner_area_code, data)
        SELECT n.id, 1, n.reported_at, 'import', NULL, 'system', NULL, n.state,
               n.owner_area_code, {SNAPSHOT}
        FROM incident n ORDER BY n.id;

        ALTER TABLE incident
            ADD CONSTRAINT incident_state_check CHECK (state IN {_in(STATES)}),
            ADD CONSTRAINT incident_state_status_check CHECK (status = CASE state
                WHEN 'reported' THEN 'new' WHEN 'closed' THEN 'closed'
                WHEN 'cancelled' THEN 'closed' ELSE 'open' END),
            ADD CONSTRAINT incident_priority_check CHECK (priority IN {_in(PRIORITIES)}),
            ADD CONSTRAINT incident_owner_level_check
                CHECK (owner_level IN ('city', 'district', 'community')),
            ADD CONSTRAINT incident_owner_check
                CHECK ((owner_level IS NULL) = (owner_area_code IS NULL)),
            ADD CONSTRAINT incident_assignee_kind_check
                CHECK (assignee_kind IN ('grid', 'unit')),
            ADD CONSTRAINT incident_assignee_check
                CHECK ((assignee_kind IS NULL) = (assignee_code IS NULL)),
            ADD CONSTRAINT incident_step_check CHECK (step IN {_in(STEPS)}),
            ADD CONSTRAINT incident_satisfaction_check CHECK (satisfaction BETWEEN 1 AND 5),
            ADD CONSTRAINT incident_version_check CHECK (version >= 1);
        CREATE INDEX incident_owner ON incident (owner_area_path text_pattern_ops);
        CREATE INDEX incident_assignee ON incident (assignee_code);
        -- The deadline sweep reads only open cases with a running clock.
        CREATE INDEX incident_step_due ON incident (step_due_at)
            WHERE state IN {_in(OPEN_STATES)};
        """
    )
    op.execute(
        f"""
        -- A new incident's lifecycle, unless its writer gave one (a bulk path that fills
        -- these columns itself skips the call, as with the cell triggers of 0004).
        CREATE FUNCTION incident_start() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE
            depth integer := CASE WHEN NEW.community_code IS NOT NULL THEN 3
                             WHEN NEW.district_code IS NOT NULL THEN 2
                             WHEN NEW.city_code IS NOT NULL THEN 1 ELSE 0 END;
        BEGIN
            NEW.state := CASE NEW.status WHEN 'new' THEN 'reported'
                         WHEN 'open' THEN 'registered' ELSE 'closed' END;
            IF NEW.owner_area_code IS NULL AND depth > 0 THEN
                NEW.owner_level := (ARRAY['city', 'district', 'community'])[depth];
                NEW.owner_area_code := split_part(NEW.area_path, '/', depth);
                NEW.owner_area_path :=
                    array_to_string((string_to_array(NEW.area_path, '/'))[1:depth], '/');
            END IF;
            IF NEW.state IN ('reported', 'registered') THEN
                NEW.step := 'accept';
                NEW.step_due_at := NEW.reported_at + make_interval(mins => (
                    SELECT minutes FROM case_time_limit WHERE category = NEW.category
                      AND priority = NEW.priority AND step = 'accept'));
            END IF;
            NEW.version := 1;
            RETURN NEW;
        END $$;
        -- Fires after incident_locate and incident_zreported (name order): cells are set.
        CREATE TRIGGER incident_zstart BEFORE INSERT ON incident
            FOR EACH ROW WHEN (NEW.state IS NULL) EXECUTE FUNCTION incident_start();

        CREATE FUNCTION incident_first_event() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO case_event (incident_id, seq, at, action, actor_token_id, actor_role,
                                    actor_area_code, to_state, to_owner_area_code,
                                    assignee_kind, assignee_code, attachments, data)
            SELECT n.id, 1, n.reported_at,
                   CASE WHEN n.state = 'reported' THEN 'report' ELSE 'import' END,
                   n.created_by, coalesce(t.role, 'system'), t.area_code, n.state,
                   n.owner_area_code, n.assignee_kind, n.assignee_code, n.attachments,
                   CASE WHEN {PLAIN_NEW} THEN {REPORTED} ELSE {SNAPSHOT} END
            FROM new_rows n LEFT JOIN api_token t ON t.id = n.created_by
            ORDER BY n.id;
            RETURN NULL;
        END $$;
        CREATE TRIGGER incident_first_event AFTER INSERT ON incident
            REFERENCING NEW TABLE AS new_rows
            FOR EACH STATEMENT EXECUTE FUNCTION incident_first_event();

        CREATE FUNCTION incident_drop_events() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            DELETE FROM case_event WHERE incident_id IN (SELECT id FROM old_rows);
            RETURN NULL;
        END $$;
        CREATE TRIGGER incident_drop_events AFTER DELETE ON incident
            REFERENCING OLD TABLE AS old_rows
            FOR EACH STATEMENT EXECUTE FUNCTION incident_drop_events();
        """
    )


def downgrade() -> None:
    op.execute(
        """
        DROP TRIGGER IF EXISTS incident_drop_events ON incident;
        DROP TRIGGER IF EXISTS incident_first_event ON incident;
        DROP TRIGGER IF EXISTS incident_zstart ON incident;
        DROP FUNCTION IF EXISTS incident_drop_events, incident_first_event, incident_start;
        DROP TABLE IF EXISTS case_event;
        DROP FUNCTION IF EXISTS notify_case_events, case_event_lock;
        DROP TABLE IF EXISTS case_time_limit;
        DROP INDEX IF EXISTS incident_step_due, incident_assignee, incident_owner;
        ALTER TABLE incident
            DROP CONSTRAINT IF EXISTS incident_state_check,
            DROP CONSTRAINT IF EXISTS incident_state_status_check,
            DROP CONSTRAINT IF EXISTS incident_priority_check,
            DROP CONSTRAINT IF EXISTS incident_owner_level_check,
            DROP CONSTRAINT IF EXISTS incident_owner_check,
            DROP CONSTRAINT IF EXISTS incident_assignee_kind_check,
            DROP CONSTRAINT IF EXISTS incident_assignee_check,
            DROP CONSTRAINT IF EXISTS incident_step_check,
            DROP CONSTRAINT IF EXISTS incident_satisfaction_check,
            DROP CONSTRAINT IF EXISTS incident_version_check,
            DROP COLUMN state, DROP COLUMN priority, DROP COLUMN owner_level,
            DROP COLUMN owner_area_code, DROP COLUMN owner_area_path,
            DROP COLUMN assignee_kind, DROP COLUMN assignee_code, DROP COLUMN assignee_path,
            DROP COLUMN step, DROP COLUMN step_due_at, DROP COLUMN step_overdue,
            DROP COLUMN dispatched_at, DROP COLUMN signed_at, DROP COLUMN handled_at,
            DROP COLUMN supervised, DROP COLUMN escalations, DROP COLUMN reopens,
            DROP COLUMN duplicate_of, DROP COLUMN satisfaction, DROP COLUMN version;
        """
    )
