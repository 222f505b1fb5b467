-- 0002: a start keeps its trace context whole. OpenTelemetry propagates a
-- tracestate of up to 32 members with values of up to 256 bytes, more than
-- VARBINARY(512) held (a longer one failed RecordStart, or was truncated
-- by a server without a strict sql_mode); BLOB holds 64 KiB.

ALTER TABLE `{prefix}starts` MODIFY traceparent BLOB NOT NULL, MODIFY tracestate BLOB NOT NULL;
