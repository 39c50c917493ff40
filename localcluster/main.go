package main

import (
	"fmt"
	"os"

	"github.com/prefect-gitops/localcluster/fakekubelet"
	"k8s.io/component-base/cli"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: localcluster etcd|apiserver|controller-manager|scheduler|kubelet [flags]")
		os.Exit(2)
	}
	sub := os.Args[1]
	os.Args = append([]string{os.Args[0] + " " + sub}, os.Args[2:]...)
	switch sub {
	case "apiserver":
		os.Exit(cli.Run(apiserver.NewAPIServerCommand()))
	case "controller-manager":
		os.Exit(cli.Run(controllermanager.NewControllerManagerCommand()))
	case "scheduler":
		os.Exit(cli.Run(scheduler.NewSchedulerCommand()))
	case "kubelet":
		os.Exit(fakekubelet.Run(os.Args[1:]))
	case "etcd":
		os.Exit(runEtcd(os.Args[1:]))
	default:
		fmt.Fprintf(os.Stderr, "unknown component %q\n", sub)
		os.Exit(2)
	}
}
