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
// ctx bounds the setup only; the device runs until Close. ModeAuto is
// userspace WireGuard (see Resolve); kernel WireGuard runs only when asked
// for by name.
func New(ctx context.Context, cfg Config) (Device, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("wg: new: %w", err)
	}
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	mode := Resolve(cfg.Mode)
	switch mode {
	case ModeNetstack:
		cfg.Log.Info("WireGuard mode", zap.String("mode", string(mode)), zap.String("asked", string(cfg.Mode)))
		return newNetstack(cfg)
	case ModeUserspace:
		cfg.Log.Info("WireGuard mode", zap.String("mode", string(mode)), zap.String("asked", string(cfg.Mode)))
		return newUserspace(ctx, cfg)
	case ModeKernel:
		cfg.Log.Warn("WireGuard mode", zap.String("mode", string(mode)), zap.String("note", "kernel mode is experimental"))
		return newKernel(ctx, cfg)
	default:
		return nil, fmt.Errorf("wg: unknown mode %q (want auto, userspace, kernel or netstack)", cfg.Mode)
	}
}

// Resolve is the mode a Config's Mode stands for. ModeAuto is userspace
// wireguard-go: it is the mode that runs end to end in every test, while
// kernel WireGuard (which goes through a userspace proxy for ICE and has no
// end-to-end coverage) must be chosen explicitly, even where the module
// exists.
func Resolve(m Mode) Mode {
	if m == ModeAuto || m == "" {
		return ModeUserspace
	}
	return m
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
