package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// neutronNeeded maps the programs a lab Neutron runs to their Debian
// packages.
var neutronNeeded = []struct{ file, pkg string }{
	{"neutron-server", "neutron-server"},
	{"neutron-db-manage", "python3-neutron"},
	{"neutron-openvswitch-agent", "neutron-openvswitch-agent"},
	{"/usr/lib/python3/dist-packages/neutron/plugins/ml2/plugin.py", "neutron-plugin-ml2"},
	{"/usr/lib/python3/dist-packages/pymysql/__init__.py", "python3-pymysql"},
	{"privsep-helper", "python3-oslo.privsep"},
	{"mariadbd", "mariadb-server-core"},
	{"mariadb-install-db", "mariadb-server-core"},
	{"mariadb", "mariadb-client-core"},
	{"epmd", "erlang-base"},
	{"/usr/lib/rabbitmq/bin/rabbitmq-server", "rabbitmq-server"},
	{apiPasteConfig, "neutron-common"},
}

// apiPasteConfig is neutron-server's WSGI pipeline file as the package
// ships it (the copy in /etc/neutron is the administrator's).
const apiPasteConfig = "/usr/share/neutron-common/api-paste.ini"

var neutronPkgDone bool

// EnsureNeutronPackages installs, like EnsurePackages and under the same
// guard against services being started by maintainer scripts, the Debian
// packages a lab Neutron needs (neutron-server,
// neutron-openvswitch-agent, neutron-plugin-ml2, python3-neutron,
// mariadb-server, rabbitmq-server, python3-pymysql) when one of their
// files is missing. It installs the harness's own packages first.
func EnsureNeutronPackages() error {
	if err := EnsurePackages(); err != nil {
		return err
	}
	pkgMu.Lock()
	defer pkgMu.Unlock()
	if neutronPkgDone {
		return nil
	}
	missing := func() []string {
		var pkgs []string
		for _, n := range neutronNeeded {
			if !haveFile(n.file) && !slices.Contains(pkgs, n.pkg) {
				pkgs = append(pkgs, n.pkg)
			}
		}
		return pkgs
	}
	if pkgs := missing(); len(pkgs) > 0 {
		all := []string{"neutron-server", "neutron-openvswitch-agent", "neutron-plugin-ml2",
			"python3-neutron", "mariadb-server", "rabbitmq-server", "python3-pymysql"}
		for _, p := range pkgs {
			if !slices.Contains(all, p) {
				all = append(all, p)
			}
		}
		if err := installPackages(all); err != nil {
			return err
		}
		if still := missing(); len(still) > 0 {
			return fmt.Errorf("lab: packages %v installed, but their files are still missing", still)
		}
	}
	neutronPkgDone = true
	return nil
}

// haveFile reports whether an absolute path exists or a program is on PATH.
func haveFile(file string) bool {
	if file[0] == '/' {
		_, err := os.Stat(file)
		return err == nil
	}
	_, err := exec.LookPath(file)
	return err == nil
}

// NeutronOptions configures StartNeutron.
type NeutronOptions struct {
	// DNSDomain is Neutron's [DEFAULT] dns_domain, the domain of every
	// port's dns_assignment fqdn; empty means "cloud.test.". It must not be
	// "openstacklocal", with which Neutron ignores dns_name.
	DNSDomain string
	// FirewallDriver is the agent's [securitygroup] firewall_driver:
	// "openvswitch" (empty: the default; security groups apply) or "noop".
	FirewallDriver string
}

// Neutron is a real Neutron running in a lab's namespace: MariaDB (unix
// socket only), epmd and RabbitMQ on private loopback ports,
// neutron-server (auth_strategy = noauth, ML2/openvswitch, VXLAN tenant
// networks) and neutron-openvswitch-agent managing the lab's bridge. Its
// files and logs are under Dir. Its methods may be called from several
// goroutines.
type Neutron struct {
	// URL is the API endpoint, "http://127.0.0.1:<port>", reachable from
	// the lab namespace; HTTPClient reaches it from the test process.
	URL string
	// Host is the agent's host name ([DEFAULT] host), the binding:host_id
	// of the ports it wires: the lab's namespace name.
	Host string
	// DNSDomain is [DEFAULT] dns_domain, with its trailing dot.
	DNSDomain string
	// Dir is the stack's directory, <lab Dir>/neutron: configs, logs,
	// database, RabbitMQ data.
	Dir string
	// ServerConfigFiles are the --config-file arguments of neutron-server:
	// Dir/neutron.conf and Dir/ml2_conf.ini.
	ServerConfigFiles []string
	// AgentConfigFiles are the --config-file arguments of the OVS agent:
	// Dir/neutron.conf and Dir/openvswitch_agent.ini. The daemon under test
	// is meant to be started with the same files.
	AgentConfigFiles []string
	// OpenFlowPort is the agent's of_listen_port on 127.0.0.1.
	OpenFlowPort int

	lab    *Lab
	client *http.Client

	mu         sync.Mutex
	stopped    bool
	mariadb    *Process
	epmd       *Process
	rabbit     *Process
	server     *Process
	agent      *Process
	serverRuns int // log file numbering
	agentRuns  int
	vms        []*VM
	phases     []string // how long each step of StartNeutron took
}

// phase records how long a step of StartNeutron took.
func (n *Neutron) phase(name string, since time.Time) {
	n.mu.Lock()
	n.phases = append(n.phases, fmt.Sprintf("%s %.1fs", name, time.Since(since).Seconds()))
	n.mu.Unlock()
}

// neutronStartTimeout bounds each waiting step of StartNeutron.
const neutronStartTimeout = 3 * time.Minute

// StartNeutron starts a Neutron in the lab's namespace and returns once
// the API answers and the OVS agent has reported itself alive (it has then
// set up br-int; its stale-flow cleanup, which deletes every flow with a
// cookie not its own, the lab's pipeline included, follows within
// seconds: see WaitStaleFlowCleanup). Lab VMs from AddVM stop working
// then: plug VMs with AddNeutronVM. Lab.Close stops the stack too; Stop
// does it earlier. On failure it stops what it started.
func (l *Lab) StartNeutron(opts NeutronOptions) (n *Neutron, err error) {
	if opts.DNSDomain == "" {
		opts.DNSDomain = "cloud.test."
	}
	if !strings.HasSuffix(opts.DNSDomain, ".") {
		opts.DNSDomain += "."
	}
	if strings.TrimSuffix(opts.DNSDomain, ".") == "openstacklocal" || strings.ContainsAny(opts.DNSDomain, " \n\t/") {
		return nil, fmt.Errorf("lab: neutron: bad DNSDomain %q", opts.DNSDomain)
	}
	switch opts.FirewallDriver {
	case "":
		opts.FirewallDriver = "openvswitch"
	case "openvswitch", "noop":
	default:
		return nil, fmt.Errorf("lab: neutron: bad FirewallDriver %q", opts.FirewallDriver)
	}
	n = &Neutron{
		Host:      l.NetNS,
		DNSDomain: opts.DNSDomain,
		Dir:       filepath.Join(l.Dir, "neutron"),
		lab:       l,
	}
	n.client = &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{
		DialContext:       l.dialInNetNS,
		DisableKeepAlives: true,
	}}
	defer func() {
		if err != nil {
			err = errors.Join(fmt.Errorf("lab: neutron: %w", err), n.Stop())
			n = nil
		}
	}()
	if err := os.Mkdir(n.Dir, 0o755); err != nil {
		return n, err
	}
	for _, d := range []string{"tmp", "home", "state", "lock", "mysql", "rabbitmq"} {
		if err := os.MkdirAll(filepath.Join(n.Dir, d), 0o755); err != nil {
			return n, err
		}
	}
	ports, err := l.freePorts(5)
	if err != nil {
		return n, err
	}
	apiPort, amqpPort, distPort, epmdPort := ports[0], ports[1], ports[2], ports[3]
	n.OpenFlowPort = ports[4]
	n.URL = fmt.Sprintf("http://127.0.0.1:%d", apiPort)
	// The VXLAN tunnel endpoint: the agent insists that local_ip is on
	// one of its host's interfaces. No tunnel is ever made (one node).
	if err := ip("-n", l.NetNS, "addr", "add", vtepIP+"/32", "dev", "lo"); err != nil {
		return n, err
	}

	var wg sync.WaitGroup
	var dbErr, mqErr error
	wg.Add(2)
	t0 := time.Now()
	go func() { defer wg.Done(); dbErr = n.startMariaDB(); n.phase("mariadb", t0) }()
	go func() { defer wg.Done(); mqErr = n.startRabbit(amqpPort, distPort, epmdPort); n.phase("rabbitmq", t0) }()
	wg.Wait()
	if err := errors.Join(dbErr, mqErr); err != nil {
		return n, err
	}
	if err := n.writeConfigs(opts, apiPort, amqpPort); err != nil {
		return n, err
	}
	if _, err := inNS(l.NetNS, n.env(), "neutron-db-manage", "--config-file", n.ServerConfigFiles[0],
		"--config-file", n.ServerConfigFiles[1], "upgrade", "heads"); err != nil {
		return n, err
	}
	n.phase("db-manage", t0)
	t0 = time.Now()
	if err := n.StartServer(); err != nil {
		return n, err
	}
	n.phase("server", t0)
	t0 = time.Now()
	if err := n.startAgent(); err != nil {
		return n, err
	}
	n.phase("agent", t0)
	l.onClose(n.Stop)
	return n, nil
}

// vtepIP is the agent's local_ip, on the lab namespace's loopback.
const vtepIP = "10.255.255.1"

// env returns the lab's environment with TMPDIR and HOME inside Dir, so
// that nothing the stack writes ends up outside it.
func (n *Neutron) env() []string {
	return append(n.lab.Env(), "TMPDIR="+filepath.Join(n.Dir, "tmp"), "HOME="+filepath.Join(n.Dir, "home"))
}

// envArgs returns the arguments of env(1) that put env's additions in
// front of a program run by Lab.startProcess (which runs with Lab.Env).
func (n *Neutron) envArgs(extra ...string) []string {
	return append([]string{"TMPDIR=" + filepath.Join(n.Dir, "tmp"), "HOME=" + filepath.Join(n.Dir, "home")}, extra...)
}

// dialInNetNS dials from a socket made in the lab namespace.
func (l *Lab) dialInNetNS(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := l.InNetNS(func() error {
		var d net.Dialer
		var err error
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// freePorts returns count distinct free TCP ports on 127.0.0.1 in the lab
// namespace.
func (l *Lab) freePorts(count int) ([]int, error) {
	var ports []int
	err := l.InNetNS(func() error {
		var lns []net.Listener
		defer func() {
			for _, ln := range lns {
				ln.Close()
			}
		}()
		for range count {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				return err
			}
			lns = append(lns, ln)
			ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
		}
		return nil
	})
	return ports, err
}

// waitTCP waits until something accepts connections on 127.0.0.1:port in
// the lab namespace, or p exits.
func (n *Neutron) waitTCP(port int, p *Process, what string) error {
	addr := "127.0.0.1:" + strconv.Itoa(port)
	return poll(neutronStartTimeout, what+" on "+addr, func() (bool, error) {
		if exited(p) {
			return false, fmt.Errorf("%s exited: see %s", p.name, p.LogPath)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		c, err := n.lab.dialInNetNS(ctx, "tcp", addr)
		if err != nil {
			time.Sleep(100 * time.Millisecond)
			return false, err
		}
		c.Close()
		return true, nil
	})
}

// exited reports whether p has exited.
func exited(p *Process) bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// startMariaDB creates a database directory and runs mariadbd on a unix
// socket only, with durability traded for speed, then creates the
// "neutron" database.
func (n *Neutron) startMariaDB() error {
	datadir := filepath.Join(n.Dir, "mysql")
	_, err := run(2*time.Minute, n.env(), "", "mariadb-install-db", "--no-defaults", "--datadir="+datadir,
		"--user=root", "--auth-root-authentication-method=socket", "--skip-test-db", "--skip-name-resolve")
	if err != nil {
		return err
	}
	p, err := n.lab.startProcess("mariadbd", filepath.Join(n.Dir, "mariadbd.log"), "env",
		append(n.envArgs(), "mariadbd", "--no-defaults", "--user=root", "--datadir="+datadir,
			"--socket="+n.mysqlSocket(), "--skip-networking", "--pid-file="+filepath.Join(n.Dir, "mariadbd.pid"),
			"--log-error="+filepath.Join(n.Dir, "mariadbd.err"), "--skip-log-bin",
			"--performance-schema=OFF", "--innodb-buffer-pool-size=32M", "--innodb-log-file-size=16M",
			"--innodb-flush-log-at-trx-commit=0", "--innodb-doublewrite=0", "--sync-frm=0",
			"--max-connections=200", "--character-set-server=utf8mb4",
			"--collation-server=utf8mb4_general_ci")...)
	if err != nil {
		return err
	}
	n.mu.Lock()
	n.mariadb = p
	n.mu.Unlock()
	return poll(neutronStartTimeout, "mariadbd on "+n.mysqlSocket(), func() (bool, error) {
		if exited(p) {
			return false, fmt.Errorf("mariadbd exited: see %s and mariadbd.err", p.LogPath)
		}
		_, err := run(cmdTimeout, n.env(), "", "mariadb", "--no-defaults", "--socket="+n.mysqlSocket(), "-uroot",
			"-e", "CREATE DATABASE IF NOT EXISTS neutron CHARACTER SET utf8mb4")
		if err != nil {
			time.Sleep(100 * time.Millisecond)
		}
		return err == nil, err
	})
}

// mysqlSocket is MariaDB's unix socket.
func (n *Neutron) mysqlSocket() string { return filepath.Join(n.Dir, "mysql.sock") }

// startRabbit starts epmd and then RabbitMQ (a node of its own, with all
// its data and logs under Dir) on loopback ports of the lab namespace.
func (n *Neutron) startRabbit(amqpPort, distPort, epmdPort int) error {
	epmdEnv := "ERL_EPMD_PORT=" + strconv.Itoa(epmdPort)
	p, err := n.lab.startProcess("epmd", filepath.Join(n.Dir, "epmd.log"), "env",
		append(n.envArgs(epmdEnv), "epmd", "-address", "127.0.0.1", "-port", strconv.Itoa(epmdPort))...)
	if err != nil {
		return err
	}
	n.mu.Lock()
	n.epmd = p
	n.mu.Unlock()
	if err := n.waitTCP(epmdPort, p, "epmd"); err != nil {
		return err
	}
	dir := filepath.Join(n.Dir, "rabbitmq")
	conf := fmt.Sprintf(`listeners.tcp.default = 127.0.0.1:%d
loopback_users = none
disk_free_limit.absolute = 10MB
vm_memory_high_watermark.absolute = 512MiB
log.console = true
log.console.level = warning
log.file = false
`, amqpPort)
	if err := os.WriteFile(filepath.Join(dir, "rabbitmq.conf"), []byte(conf), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "enabled_plugins"), []byte("[].\n"), 0o644); err != nil {
		return err
	}
	p, err = n.lab.startProcess("rabbitmq-server", filepath.Join(n.Dir, "rabbitmq.log"), "env",
		append(n.envArgs(epmdEnv,
			"ERL_EPMD_ADDRESS=127.0.0.1",
			"RABBITMQ_NODENAME=rabbit-"+n.lab.NetNS+"@localhost",
			"RABBITMQ_NODE_IP_ADDRESS=127.0.0.1",
			"RABBITMQ_NODE_PORT="+strconv.Itoa(amqpPort),
			"RABBITMQ_DIST_PORT="+strconv.Itoa(distPort),
			"RABBITMQ_CONF_ENV_FILE="+filepath.Join(dir, "rabbitmq-env.conf"),
			"RABBITMQ_CONFIG_FILE="+filepath.Join(dir, "rabbitmq.conf"),
			"RABBITMQ_ADVANCED_CONFIG_FILE="+filepath.Join(dir, "advanced.config"),
			"RABBITMQ_ENABLED_PLUGINS_FILE="+filepath.Join(dir, "enabled_plugins"),
			"RABBITMQ_MNESIA_BASE="+filepath.Join(dir, "mnesia"),
			"RABBITMQ_LOG_BASE="+filepath.Join(dir, "log"),
			"RABBITMQ_PLUGINS_EXPAND_DIR="+filepath.Join(dir, "plugins-expand"),
			"RABBITMQ_PID_FILE="+filepath.Join(dir, "rabbitmq.pid"),
			"RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=+S 1:1 +A 4",
		), "/usr/lib/rabbitmq/bin/rabbitmq-server")...)
	if err != nil {
		return err
	}
	n.mu.Lock()
	n.rabbit = p
	n.mu.Unlock()
	return n.waitTCP(amqpPort, p, "rabbitmq")
}

// writeConfigs writes neutron.conf, ml2_conf.ini and
// openvswitch_agent.ini.
func (n *Neutron) writeConfigs(opts NeutronOptions, apiPort, amqpPort int) error {
	l := n.lab
	neutronConf := fmt.Sprintf(`[DEFAULT]
host = %[1]s
core_plugin = ml2
service_plugins = router
auth_strategy = noauth
dns_domain = %[2]s
allow_overlapping_ips = true
bind_host = 127.0.0.1
bind_port = %[3]d
api_workers = 0
rpc_workers = 1
rpc_state_report_workers = 0
graceful_shutdown_timeout = 5
transport_url = rabbit://guest:guest@127.0.0.1:%[4]d/
state_path = %[5]s/state
api_paste_config = %[8]s
dhcp_agent_notification = false
notify_nova_on_port_status_changes = false
notify_nova_on_port_data_changes = false
debug = false
use_stderr = true

[agent]
report_interval = 5

[database]
connection = mysql+pymysql://root@localhost/neutron?unix_socket=%[6]s&charset=utf8mb4
max_pool_size = 5
max_overflow = 10

[oslo_concurrency]
lock_path = %[5]s/lock

[oslo_messaging_rabbit]
heartbeat_timeout_threshold = 0

[neutron]
auth_type = noauth
endpoint_override = %[7]s
`, n.Host, n.DNSDomain, apiPort, amqpPort, n.Dir, n.mysqlSocket(), n.URL, apiPasteConfig)
	ml2Conf := `[ml2]
type_drivers = flat,vlan,vxlan
tenant_network_types = vxlan
mechanism_drivers = openvswitch
extension_drivers = port_security,dns_domain_ports

[ml2_type_vxlan]
vni_ranges = 1:1000

[ml2_type_vlan]
network_vlan_ranges =

[ml2_type_flat]
flat_networks = *

[securitygroup]
enable_security_group = true
firewall_driver = ` + opts.FirewallDriver + "\n"
	agentConf := fmt.Sprintf(`[ovs]
integration_bridge = %[1]s
tunnel_bridge = br-tun
int_peer_patch_port = patch-tun
tun_peer_patch_port = patch-int
local_ip = %[2]s
datapath_type = netdev
ovsdb_connection = unix:%[3]s
of_listen_address = 127.0.0.1
of_listen_port = %[4]d
bridge_mappings =

[agent]
tunnel_types = vxlan
polling_interval = 1
minimize_polling = true
root_helper = env OVS_RUNDIR=%[5]s OVS_DBDIR=%[5]s OVS_LOGDIR=%[5]s TMPDIR=%[6]s/tmp
report_interval = 5

[securitygroup]
enable_security_group = true
firewall_driver = %[7]s
`, l.Bridge, vtepIP, l.dbSocket(), n.OpenFlowPort, l.RunDir, n.Dir, opts.FirewallDriver)
	files := map[string]string{"neutron.conf": neutronConf, "ml2_conf.ini": ml2Conf, "openvswitch_agent.ini": agentConf}
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(n.Dir, name), []byte(text), 0o644); err != nil {
			return err
		}
	}
	n.ServerConfigFiles = []string{filepath.Join(n.Dir, "neutron.conf"), filepath.Join(n.Dir, "ml2_conf.ini")}
	n.AgentConfigFiles = []string{filepath.Join(n.Dir, "neutron.conf"), filepath.Join(n.Dir, "openvswitch_agent.ini")}
	return nil
}

// configArgs turns config files into --config-file arguments.
func configArgs(files []string) []string {
	var args []string
	for _, f := range files {
		args = append(args, "--config-file", f)
	}
	return args
}

// StartServer starts neutron-server (after StopServer; StartNeutron calls
// it first) and returns once the API answers. Its log is
// Dir/neutron-server.<n>.log, n counting the starts from 1.
func (n *Neutron) StartServer() error {
	n.mu.Lock()
	if n.stopped || n.server != nil && !exited(n.server) {
		n.mu.Unlock()
		return errors.New("lab: neutron: StartServer: stopped, or the server runs")
	}
	n.serverRuns++
	logPath := filepath.Join(n.Dir, fmt.Sprintf("neutron-server.%d.log", n.serverRuns))
	n.mu.Unlock()
	p, err := n.lab.startProcess("neutron-server", logPath, "env",
		append(n.envArgs(), append([]string{"neutron-server"}, configArgs(n.ServerConfigFiles)...)...)...)
	if err != nil {
		return fmt.Errorf("lab: neutron: %w", err)
	}
	n.mu.Lock()
	n.server = p
	n.mu.Unlock()
	err = poll(neutronStartTimeout, "neutron-server at "+n.URL, func() (bool, error) {
		if exited(p) {
			return false, fmt.Errorf("neutron-server exited: see %s", logPath)
		}
		if err := n.do(http.MethodGet, "/v2.0/networks?fields=id", nil, nil); err != nil {
			time.Sleep(200 * time.Millisecond)
			return false, err
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("lab: neutron: %w", err)
	}
	return nil
}

// StopServer stops neutron-server (SIGTERM, then SIGKILL; with its worker
// processes): the API is unreachable until StartServer. The agent keeps
// running and retries its RPC calls.
func (n *Neutron) StopServer() error {
	n.mu.Lock()
	p := n.server
	n.mu.Unlock()
	if p == nil {
		return nil
	}
	if err := n.stopTree(p); err != nil {
		return fmt.Errorf("lab: neutron: %w", err)
	}
	return nil
}

// startAgent starts neutron-openvswitch-agent and waits until the server
// lists it alive.
func (n *Neutron) startAgent() error {
	n.mu.Lock()
	if n.stopped {
		n.mu.Unlock()
		return errors.New("lab: neutron: stopped")
	}
	n.agentRuns++
	logPath := filepath.Join(n.Dir, fmt.Sprintf("neutron-openvswitch-agent.%d.log", n.agentRuns))
	n.mu.Unlock()
	p, err := n.lab.startProcess("neutron-openvswitch-agent", logPath, "env",
		append(n.envArgs(), append([]string{"neutron-openvswitch-agent"}, configArgs(n.AgentConfigFiles)...)...)...)
	if err != nil {
		return fmt.Errorf("lab: neutron: %w", err)
	}
	n.mu.Lock()
	n.agent = p
	n.mu.Unlock()
	err = poll(neutronStartTimeout, "the OVS agent to report in", func() (bool, error) {
		if exited(p) {
			return false, fmt.Errorf("neutron-openvswitch-agent exited: see %s", logPath)
		}
		var resp struct {
			Agents []struct {
				Alive     bool   `json:"alive"`
				StartedAt string `json:"started_at"`
			} `json:"agents"`
		}
		err := n.do(http.MethodGet, "/v2.0/agents?binary=neutron-openvswitch-agent&host="+n.Host, nil, &resp)
		if err != nil {
			return false, err
		}
		if len(resp.Agents) != 1 || !resp.Agents[0].Alive {
			time.Sleep(200 * time.Millisecond)
			return false, nil
		}
		// A restarted agent is listed alive at once; wait for its own
		// report, which follows its bridge setup.
		data, err := os.ReadFile(logPath)
		if err != nil {
			return false, err
		}
		if !strings.Contains(string(data), "Agent initialized successfully") {
			time.Sleep(200 * time.Millisecond)
			return false, nil
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("lab: neutron: %w", err)
	}
	return nil
}

// RestartAgent stops neutron-openvswitch-agent and starts it again; it
// returns once the new agent has reported in. The new agent picks new
// cookies and, after its first loop, deletes every flow with a cookie
// not its own (WaitStaleFlowCleanup tells when).
func (n *Neutron) RestartAgent() error {
	n.mu.Lock()
	p := n.agent
	n.mu.Unlock()
	if p != nil {
		if err := n.stopTree(p); err != nil {
			return fmt.Errorf("lab: neutron: %w", err)
		}
	}
	return n.startAgent()
}

// AgentPID returns the PID of the running OVS agent, 0 when none runs.
func (n *Neutron) AgentPID() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.agent == nil || exited(n.agent) {
		return 0
	}
	return n.agent.PID
}

// WaitStaleFlowCleanup waits until the agent started last has finished
// deleting br-int's flows of foreign cookies (its log says it moved on to
// br-tun) and returns when that was logged as seen from here (within
// about 100 ms).
func (n *Neutron) WaitStaleFlowCleanup(timeout time.Duration) (time.Time, error) {
	n.mu.Lock()
	p := n.agent
	n.mu.Unlock()
	if p == nil {
		return time.Time{}, errors.New("lab: neutron: no agent")
	}
	var at time.Time
	err := poll(timeout, "the agent's stale-flow cleanup", func() (bool, error) {
		data, err := os.ReadFile(p.LogPath)
		if err != nil {
			return false, err
		}
		if strings.Contains(string(data), "Cleaning stale br-tun flows") {
			at = time.Now()
			return true, nil
		}
		if exited(p) {
			return false, fmt.Errorf("agent exited: see %s", p.LogPath)
		}
		time.Sleep(50 * time.Millisecond)
		return false, nil
	})
	if err != nil {
		return time.Time{}, fmt.Errorf("lab: neutron: %w", err)
	}
	return at, nil
}

// Stop stops everything StartNeutron started, by PID and with their child
// processes (the agent's privsep daemons and ovsdb-client monitors, the
// server's workers, RabbitMQ's Erlang VM): the agent and the server first,
// then RabbitMQ and MariaDB, then epmd. Files stay in Dir. The bridge keeps
// the agent's flows and ports. It may be called again.
func (n *Neutron) Stop() error {
	n.mu.Lock()
	n.stopped = true
	first := []*Process{n.agent, n.server}
	second := []*Process{n.rabbit, n.mariadb}
	last := n.epmd
	n.mu.Unlock()
	var errs []error
	var mu sync.Mutex
	stopAll := func(ps []*Process) {
		var wg sync.WaitGroup
		for _, p := range ps {
			if p == nil {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := n.stopTree(p); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
	}
	stopAll(first)
	stopAll(second)
	stopAll([]*Process{last})
	if err := n.sweep(); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("lab: neutron: stop: %w", err)
	}
	return nil
}

// procID identifies a process across PID reuse: its PID and start time.
type procID struct {
	pid   int
	start string
}

// procStat returns the parent PID and start time of a process.
func procStat(pid int) (ppid int, start string, ok bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, "", false
	}
	s := string(b)
	end := strings.LastIndexByte(s, ')')
	if end < 0 {
		return 0, "", false
	}
	f := strings.Fields(s[end+1:])
	// f[0] is the state, f[1] the parent PID, f[19] the start time.
	if len(f) < 20 || f[0] == "Z" {
		return 0, "", false
	}
	ppid, err = strconv.Atoi(f[1])
	if err != nil {
		return 0, "", false
	}
	return ppid, f[19], true
}

// descendants returns the processes below pid.
func descendants(pid int) []procID {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	children := map[int][]int{}
	starts := map[int]string{}
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		ppid, start, ok := procStat(p)
		if !ok {
			continue
		}
		children[ppid] = append(children[ppid], p)
		starts[p] = start
	}
	var out []procID
	queue := []int{pid}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, c := range children[p] {
			out = append(out, procID{c, starts[c]})
			queue = append(queue, c)
		}
	}
	return out
}

// alive reports whether the process still runs (not a zombie) and is the
// same one.
func (id procID) alive() bool {
	_, start, ok := procStat(id.pid)
	return ok && start == id.start
}

// stopTree stops p (SIGTERM, SIGKILL after the timeout) and then whatever
// of the processes that were below it when it was asked to stop still
// runs.
func (n *Neutron) stopTree(p *Process) error {
	below := descendants(p.PID)
	err := p.terminate()
	return errors.Join(err, killAll(below))
}

// killAll ends processes by PID: SIGTERM, then SIGKILL for those still
// there after a few seconds.
func killAll(ids []procID) error {
	var left []procID
	for _, id := range ids {
		if id.alive() {
			_ = syscall.Kill(id.pid, syscall.SIGTERM)
			left = append(left, id)
		}
	}
	if len(left) == 0 {
		return nil
	}
	gone := func() (bool, error) {
		for _, id := range left {
			if id.alive() {
				return false, nil
			}
		}
		return true, nil
	}
	if poll(5*time.Second, "child processes to exit", gone) == nil {
		return nil
	}
	for _, id := range left {
		if id.alive() {
			_ = syscall.Kill(id.pid, syscall.SIGKILL)
		}
	}
	return poll(5*time.Second, "child processes to die after SIGKILL", gone)
}

// sweep ends the processes that escaped stopTree: those in the lab
// namespace whose command line names Dir (a privsep daemon detaches
// itself from the agent).
func (n *Neutron) sweep() error {
	ids := n.strays()
	if len(ids) == 0 {
		return nil
	}
	return killAll(ids)
}

// strays lists the processes in the lab namespace whose command line
// names Dir.
func (n *Neutron) strays() []procID {
	var nsIno uint64
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join("/var/run/netns", n.lab.NetNS), &st); err != nil {
		return nil
	}
	nsIno = st.Ino
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var ids []procID
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		var pst syscall.Stat_t
		if syscall.Stat("/proc/"+e.Name()+"/ns/net", &pst) != nil || pst.Ino != nsIno {
			continue
		}
		cmdline, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil || !strings.Contains(string(cmdline), n.Dir) {
			continue
		}
		if _, start, ok := procStat(pid); ok {
			ids = append(ids, procID{pid, start})
		}
	}
	return ids
}

// pids returns the PIDs of the stack's running main processes.
func (n *Neutron) pids() []int {
	n.mu.Lock()
	defer n.mu.Unlock()
	var pids []int
	for _, p := range []*Process{n.mariadb, n.epmd, n.rabbit, n.server, n.agent} {
		if p != nil && !exited(p) {
			pids = append(pids, p.PID)
		}
	}
	return pids
}
