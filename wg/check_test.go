package wg

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"

	"golang.zx2c4.com/wireguard/tun"
)

// TestCheckBusyPort: a port another socket holds is refused before
// anything is made, with a message naming --port.
func TestCheckBusyPort(t *testing.T) {
	c, err := net.ListenPacket("udp4", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	port := uint16(c.LocalAddr().(*net.UDPAddr).Port)
	err = Check(context.Background(), Config{Mode: ModeNetstack, ListenPort: port})
	if !errors.Is(err, ErrCannotRun) || !strings.Contains(err.Error(), "--port") {
		t.Fatalf("busy port %d: %v, want ErrCannotRun naming --port", port, err)
	}
	c.Close()
	if err := Check(context.Background(), Config{Mode: ModeNetstack, ListenPort: port}); err != nil {
		t.Fatalf("free port %d: %v", port, err)
	}
	if err := Check(context.Background(), Config{Mode: ModeNetstack}); err != nil {
		t.Fatalf("port 0: %v", err)
	}
}

// TestCheckUnprivileged: without CAP_NET_ADMIN the TUN modes are refused
// with a message naming --wg-mode netstack (the flag that exists).
func TestCheckUnprivileged(t *testing.T) {
	if hasNetAdmin() {
		// Run this test again in a child without the capability.
		setpriv, err := exec.LookPath("setpriv")
		if err != nil || os.Getenv("MESHD_TEST_NO_NET_ADMIN") != "" {
			t.Skip("needs a process without CAP_NET_ADMIN, or setpriv to drop it")
		}
		cmd := exec.Command(setpriv, "--inh-caps=-net_admin", "--bounding-set=-net_admin", "--",
			os.Args[0], "-test.run=^TestCheckUnprivileged$", "-test.count=1", "-test.v")
		cmd.Env = append(os.Environ(), "MESHD_TEST_NO_NET_ADMIN=1")
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "--- PASS: TestCheckUnprivileged") {
			t.Fatalf("without CAP_NET_ADMIN: %v\n%s", err, out)
		}
		return
	}
	err := Check(context.Background(), Config{Mode: ModeAuto})
	if !errors.Is(err, ErrCannotRun) || !strings.Contains(err.Error(), "--wg-mode netstack") {
		t.Fatalf("unprivileged: %v", err)
	}
}

// TestCheckTUN (root): the TUN modes pass where the interface can be made,
// leave no interface behind, and are refused, naming --iface, when another
// program holds a TUN of that name.
func TestCheckTUN(t *testing.T) {
	requireRoot(t)
	name := fmt.Sprintf("mchk%d", os.Getpid()%100000)
	if err := Check(context.Background(), Config{Mode: ModeAuto, Name: name}); err != nil {
		t.Fatal(err)
	}
	if _, err := net.InterfaceByName(name); err == nil {
		t.Fatalf("Check left interface %s behind", name)
	}
	held, err := tun.CreateTUN(name, DefaultMTU)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	err = Check(context.Background(), Config{Mode: ModeUserspace, Name: name})
	if !errors.Is(err, ErrCannotRun) || !strings.Contains(err.Error(), "--iface") {
		t.Fatalf("TUN name held by another: %v, want ErrCannotRun naming --iface", err)
	}
}
