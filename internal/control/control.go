// Package control is the daemon's local control socket: `status` and
// `flush-cache` ask the running daemon over a unix socket.
//
// The protocol is one JSON request line per connection,
//
//	{"command":"status"}
//
// answered by one JSON response line, after which the server closes the
// connection:
//
//	{"ok":true,"result":{...}}
//	{"ok":false,"error":"the cache is off (cache_size = 0)"}
//
// The result of status is a Status; the result of flush-cache is
// {"flushed":N}, the number of entries the cache held.
package control

import "time"

// Commands a client may send.
const (
	// CommandStatus asks for the daemon's Status.
	CommandStatus = "status"
	// CommandFlushCache empties the answer cache.
	CommandFlushCache = "flush-cache"
)

// Handler is what the control socket asks of the daemon. Its methods are
// called from the server's connection goroutines, concurrently.
type Handler interface {
	// Status returns the daemon's state now.
	Status() Status
	// FlushCache empties the cache and returns how many entries it held.
	FlushCache() (int, error)
}

// Status is the daemon's state as `status` shows it.
type Status struct {
	// Version is the daemon's version.
	Version string `json:"version"`
	// Started is when the daemon started.
	Started time.Time `json:"started"`
	// Bridge is the integration bridge served.
	Bridge string `json:"bridge"`
	// OpenFlow is the session with the bridge.
	OpenFlow OpenFlowStatus `json:"openflow"`
	// Upstreams are the upstream resolvers in force, in configured order.
	Upstreams []UpstreamStatus `json:"upstreams"`
	// Cache is the answer cache; nil when the cache is off.
	Cache *CacheStatus `json:"cache,omitempty"`
	// Inventory is the OVSDB port inventory.
	Inventory InventoryStatus `json:"inventory"`
	// Records are the Neutron names; nil without a Neutron API.
	Records *RecordsStatus `json:"records,omitempty"`
	// Counters are the daemon's counters: answers, drops and refusals by
	// reason.
	Counters map[string]uint64 `json:"counters,omitempty"`
	// RecentErrors are the last warnings and errors logged, oldest first.
	RecentErrors []ErrorEntry `json:"recent_errors,omitempty"`
}

// OpenFlowStatus is the state of the OpenFlow session with the bridge.
type OpenFlowStatus struct {
	// Connected reports whether the session is up.
	Connected bool `json:"connected"`
	// Target is where the daemon speaks OpenFlow ("unix:PATH", "tcp:HOST:PORT").
	Target string `json:"target"`
	// Flows is how many of the daemon's flows are installed.
	Flows int `json:"flows"`
	// Meters is how many of the daemon's meters are installed.
	Meters int `json:"meters"`
	// Ports is how many bridge ports the session knows.
	Ports int `json:"ports"`
	// Reconnects counts the sessions established after the first.
	Reconnects uint64 `json:"reconnects"`
	// FlowReinstalls counts the times the flows were put back.
	FlowReinstalls uint64 `json:"flow_reinstalls"`
}

// UpstreamStatus is the health of one upstream resolver.
type UpstreamStatus struct {
	// Server is the resolver's address and port.
	Server string `json:"server"`
	// Up reports whether the resolver is considered healthy.
	Up bool `json:"up"`
	// ConsecutiveFailures counts the failures since its last answer.
	ConsecutiveFailures uint32 `json:"consecutive_failures"`
	// AvgRTT is its smoothed round-trip time; 0 before its first answer.
	AvgRTT time.Duration `json:"avg_rtt_ns"`
	// LastError is its last failure, "" when none.
	LastError string `json:"last_error,omitempty"`
}

// CacheStatus is the state of the answer cache.
type CacheStatus struct {
	// Entries is how many answers the cache holds.
	Entries int `json:"entries"`
	// Hits counts the queries answered from the cache.
	Hits uint64 `json:"hits"`
	// Misses counts the queries the cache could not answer.
	Misses uint64 `json:"misses"`
	// Evictions counts the entries evicted to make room.
	Evictions uint64 `json:"evictions"`
}

// InventoryStatus is the state of the OVSDB port inventory.
type InventoryStatus struct {
	// Connected reports whether the inventory is synced with OVSDB.
	Connected bool `json:"connected"`
	// VMPorts is how many VM ports the inventory knows.
	VMPorts int `json:"vm_ports"`
	// Networks are the Neutron networks of those ports.
	Networks []string `json:"networks"`
}

// RecordsStatus is the state of the Neutron names.
type RecordsStatus struct {
	// LastSync is when the last full sync completed; zero before it.
	LastSync time.Time `json:"last_sync"`
	// Networks are the names held per network.
	Networks []NetworkRecords `json:"networks"`
	// SyncErrors counts the syncs that failed.
	SyncErrors uint64 `json:"sync_errors"`
}

// NetworkRecords is what the records hold for one network.
type NetworkRecords struct {
	// ID is the Neutron network's UUID.
	ID string `json:"id"`
	// Ports is how many of its ports have names.
	Ports int `json:"ports"`
	// Names is how many names it answers.
	Names int `json:"names"`
}

// ErrorEntry is one warning or error the daemon logged.
type ErrorEntry struct {
	// Time is when it was last logged.
	Time time.Time `json:"time"`
	// Level is "WARN" or "ERROR".
	Level string `json:"level"`
	// Message is the log message with its attributes (key=value).
	Message string `json:"message"`
	// Count is how many times in a row it was logged (at least 1).
	Count int `json:"count"`
}
