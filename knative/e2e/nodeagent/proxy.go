package main

import (
	"bytes"
	"fmt"
	"log"
	"os"
	"os/exec"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// syncServiceProxy stands in for kube-proxy and cluster DNS: every
// Service's ClusterIP:port is DNATed (iptables, random choice among the
// ready addresses of its Endpoints, as kube-proxy's iptables mode) and
// masqueraded, and <svc>.<ns>.svc.cluster.local resolves to the ClusterIP
// through the run's /etc/hosts (rewritten in place, so the bind mount every
// namespace sees stays the same file).
func (a *agent) syncServiceProxy() {
	if a.hostsFile == "" {
		return
	}
	svcs, err := a.svcs.List(labels.Everything())
	if err != nil {
		return
	}
	sort.Slice(svcs, func(i, j int) bool { return svcs[i].Namespace+svcs[i].Name < svcs[j].Namespace+svcs[j].Name })
	var rules, hosts bytes.Buffer
	rules.WriteString("*nat\n:E2E-SERVICES - [0:0]\n")
	hosts.WriteString(a.hostsStatic)
	hosts.WriteString("# e2e node agent: Service ClusterIPs\n")
	for _, svc := range svcs {
		cip := svc.Spec.ClusterIP
		if cip == "" || cip == corev1.ClusterIPNone {
			continue
		}
		fq := svc.Name + "." + svc.Namespace + ".svc"
		if !strings.Contains(a.hostsStatic, " "+fq+".cluster.local") {
			fmt.Fprintf(&hosts, "%s %s.cluster.local %s\n", cip, fq, fq)
		}
		ep, err := a.eps.Endpoints(svc.Namespace).Get(svc.Name)
		if err != nil {
			continue
		}
		for _, sp := range svc.Spec.Ports {
			if sp.Protocol != "" && sp.Protocol != corev1.ProtocolTCP {
				continue
			}
			var dests []string
			for _, ss := range ep.Subsets {
				for _, p := range ss.Ports {
					if p.Name != sp.Name {
						continue
					}
					for _, ad := range ss.Addresses {
						dests = append(dests, fmt.Sprintf("%s:%d", ad.IP, p.Port))
					}
				}
			}
			for i, d := range dests {
				fmt.Fprintf(&rules, "-A E2E-SERVICES -d %s/32 -p tcp --dport %d", cip, sp.Port)
				if left := len(dests) - i; left > 1 {
					fmt.Fprintf(&rules, " -m statistic --mode random --probability %.5f", 1/float64(left))
				}
				fmt.Fprintf(&rules, " -j DNAT --to-destination %s\n", d)
			}
		}
	}
	rules.WriteString("COMMIT\n")
	if r := rules.String(); r != a.lastRules {
		if !a.proxyInit {
			for _, args := range [][]string{
				{"-t", "nat", "-N", "E2E-SERVICES"},
				{"-t", "nat", "-A", "PREROUTING", "-j", "E2E-SERVICES"},
				{"-t", "nat", "-A", "OUTPUT", "-j", "E2E-SERVICES"},
				{"-t", "nat", "-A", "POSTROUTING", "-m", "conntrack", "--ctstate", "DNAT", "-j", "MASQUERADE"},
			} {
				if out, err := exec.Command("iptables", args...).CombinedOutput(); err != nil {
					log.Printf("iptables %v: %v: %s", args, err, out)
					return
				}
			}
			a.proxyInit = true
		}
		cmd := exec.Command("iptables-restore", "--noflush")
		cmd.Stdin = strings.NewReader(r)
		if out, err := cmd.CombinedOutput(); err != nil {
			log.Printf("iptables-restore: %v: %s", err, out)
		} else {
			a.lastRules = r
		}
	}
	if h := hosts.String(); h != a.lastHosts {
		// In place (O_TRUNC), never rename: /etc/hosts is a bind mount of it.
		if err := os.WriteFile(a.hostsFile, []byte(h), 0o644); err != nil {
			log.Printf("hosts: %v", err)
		} else {
			a.lastHosts = h
		}
	}
}
