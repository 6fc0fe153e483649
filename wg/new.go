package wg

import (
	"context"
	"errors"
	"fmt"

	"go.uber.org/zap"
)

// DefaultName is the interface name when Config.Name is empty.
const DefaultName = "meshd0"

// New makes the interface cfg describes and brings it up with no peers.
// ctx bounds the setup only; the device runs until Close. In ModeAuto it
// uses kernel WireGuard when the module is present (it tries to create a
// wireguard link) and the firewall rules can be enforced there (cfg.Filter
// is nil or an internal/filter Filter, and nftables works), and userspace
// otherwise, saying why in the log.
func New(ctx context.Context, cfg Config) (Device, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("wg: new: %w", err)
	}
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	switch cfg.Mode {
	case ModeNetstack:
		return newNetstack(cfg)
	case ModeUserspace:
		return newUserspace(ctx, cfg)
	case ModeKernel:
		return newKernel(ctx, cfg)
	case ModeAuto:
		return pickAuto(ctx, cfg, kernelAvailable, newKernel, newUserspace)
	default:
		return nil, fmt.Errorf("wg: unknown mode %q (want auto, userspace, kernel or netstack)", cfg.Mode)
	}
}

// pickAuto is ModeAuto's choice: kernel WireGuard when present and able to
// enforce the firewall rules (cfg.Filter nil or an internal/filter Filter,
// and its nftables table installs), else userspace, and the log says which
// and why.
func pickAuto(ctx context.Context, cfg Config, present func(context.Context, *zap.Logger) bool,
	kernel, userspace func(context.Context, Config) (Device, error)) (Device, error) {
	if !present(ctx, cfg.Log) {
		return userspace(ctx, cfg)
	}
	if _, ok := cfg.Filter.(describedFilter); cfg.Filter != nil && !ok {
		cfg.Log.Info("kernel WireGuard is present, but this packet filter runs only in userspace: using userspace WireGuard")
		return userspace(ctx, cfg)
	}
	d, err := kernel(ctx, cfg)
	if err == nil {
		cfg.Log.Info("using kernel WireGuard; the firewall rules are an nftables table on the interface")
		return d, nil
	}
	cfg.Log.Warn("kernel WireGuard is present but could not be set up; using userspace WireGuard", zap.Error(err))
	return userspace(ctx, cfg)
}

// fill checks cfg and sets its defaults.
func (cfg *Config) fill() error {
	if cfg.Mode == "" {
		cfg.Mode = ModeAuto
	}
	if cfg.Name == "" {
		cfg.Name = DefaultName
	}
	if len(cfg.Name) > 15 {
		return fmt.Errorf("wg: interface name %q is longer than 15 bytes; choose a shorter --iface", cfg.Name)
	}
	if cfg.PrivateKey.IsZero() {
		return errors.New("wg: no private key")
	}
	if !cfg.Address.IsValid() {
		return errors.New("wg: no overlay address (want e.g. 100.64.0.7/16)")
	}
	if cfg.MTU == 0 {
		cfg.MTU = DefaultMTU
	}
	if cfg.MTU < 576 || cfg.MTU > 9000 {
		return fmt.Errorf("wg: MTU %d out of range 576..9000", cfg.MTU)
	}
	if cfg.Log == nil {
		cfg.Log = zap.NewNop()
	}
	cfg.Log = cfg.Log.Named("wg").With(zap.String("iface", cfg.Name))
	return nil
}
