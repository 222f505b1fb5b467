package redis

// requiredSettings are the server settings, as CONFIG GET names and
// reports them, under which Redis fsyncs every write before it replies:
//
//   - appendonly yes: writes go to the append-only file at all;
//   - appendfsync always: the file is fsynced before each reply;
//   - no-appendfsync-on-rewrite no: "yes" skips that fsync for as long as
//     an AOF rewrite or RDB save runs in the background, so the writes
//     acknowledged meanwhile (for seconds or minutes, and rewrites start
//     by themselves as the file grows) are only in the page cache, and an
//     operating system crash or power loss takes them.
var requiredSettings = [][2]string{
	{"appendonly", "yes"},
	{"appendfsync", "always"},
	{"no-appendfsync-on-rewrite", "no"},
}

// requiredSettingsText names requiredSettings in errors and logs.
const requiredSettingsText = `"appendonly yes", "appendfsync always" and "no-appendfsync-on-rewrite no"`
