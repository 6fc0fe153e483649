package pgtest

import "syscall"

const sigkill = syscall.SIGKILL

func ownGroup() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }

func signal(pid int, sig syscall.Signal) error { return syscall.Kill(pid, sig) }
