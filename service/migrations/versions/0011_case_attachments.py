"""Photos of a case: the files a handler attaches to its feedback, stored in the database.

A grid officer's tablet uploads a photo (``POST /cases/{id}/attachments``) and puts the URL
it gets back in the feedback action's ``attachments``. The file is keyed by its case and the
SHA-256 of its bytes, so an upload retried over a weak network (or sent twice from an offline
queue) stores one row and answers the same URL. In the database rather than on a disk: every
server process and host sees it, it is backed up and deleted with its case, and a photo of a
few hundred kilobytes is well within what ``bytea`` carries.
"""

from alembic import op

revision = "0011"
down_revision = "0010"

#: What the tablets upload: camera photos (HEIC is converted by the browser's picker).
MEDIA_TYPES = ("image/jpeg", "image/png", "image/webp")


def upgrade() -> None:
    media = ", ".join(f"'{m}'" for m in MEDIA_TYPES)
    op.execute(
        f"""
        CREATE TABLE case_attachment (
            incident_id bigint NOT NULL REFERENCES incident (id) ON DELETE CASCADE,
            sha256 text NOT NULL,
            media_type text NOT NULL,
            bytes integer NOT NULL,
            data bytea NOT NULL,
            created_by text,
            created_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (incident_id, sha256),
            CONSTRAINT case_attachment_sha256_check CHECK (sha256 ~ '^[0-9a-f]{{64}}$'),
            CONSTRAINT case_attachment_media_type_check CHECK (media_type IN ({media})),
            CONSTRAINT case_attachment_bytes_check CHECK (bytes = octet_length(data))
        );
        -- Photos are already compressed: keep them out of TOAST's compression attempts.
        ALTER TABLE case_attachment ALTER COLUMN data SET STORAGE EXTERNAL;
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS case_attachment")
