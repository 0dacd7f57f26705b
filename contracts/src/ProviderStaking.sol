// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {IProviderStaking} from "./interfaces/IProviderStaking.sol";
import {TokenTransfers} from "./libraries/TokenTransfers.sol";

/// @title ProviderStaking
/// @notice Provider stake, node-key registry and lease collateral of gpunet. See IProviderStaking.
contract ProviderStaking is IProviderStaking, ReentrancyGuardTransient {
    using SafeERC20 for IERC20;
    using TokenTransfers for IERC20;

    /// @dev Hot per-provider record, one slot: read and written by lock/unlock.
    struct ProviderRecord {
        uint96 stake; // free + locked
        uint96 locked;
        bool registered;
    }

    /// @dev Unbonding tokens of a provider, one slot.
    struct UnbondingRecord {
        uint96 amount;
        uint64 readyAt;
    }

    uint256 private constant _BPS = 10_000;

    IERC20 private immutable _token;
    address private immutable _deployer;
    address private immutable _treasury;
    uint256 private immutable _minStake;
    uint64 private immutable _unbondingPeriod;
    uint16 private immutable _wrongedBps;
    uint16 private immutable _finderBps;

    address private _escrow;
    mapping(address provider => ProviderRecord) private _providers;
    mapping(address provider => UnbondingRecord) private _unbonding;
    mapping(address provider => bytes32) private _nodeKeys;
    /// @dev Slash shares whose transfer failed, owed to each recipient until it calls `withdrawSlashProceeds`.
    mapping(address recipient => uint256) private _slashProceeds;

    modifier onlyEscrow() {
        if (msg.sender != _escrow) revert ProviderStaking_NotEscrow(msg.sender);
        _;
    }

    /// @param token_ Staking token.
    /// @param treasury_ Receiver of the treasury share of slashes.
    /// @param minStake_ Minimum stake for `isRegistered`.
    /// @param unbondingPeriod_ Seconds between `requestUnbond` and `withdrawUnbonded`.
    /// @param wrongedBps_ Share of a slash paid to the wronged party.
    /// @param finderBps_ Share of a slash paid to the finder (the rest goes to the treasury).
    constructor(
        IERC20 token_,
        address treasury_,
        uint256 minStake_,
        uint64 unbondingPeriod_,
        uint16 wrongedBps_,
        uint16 finderBps_
    ) {
        if (address(token_) == address(0) || treasury_ == address(0)) {
            revert ProviderStaking_ZeroAddress();
        }
        if (uint256(wrongedBps_) + finderBps_ > _BPS) revert ProviderStaking_InvalidSplit(wrongedBps_, finderBps_);
        if (minStake_ > type(uint96).max) revert ProviderStaking_AmountTooLarge(minStake_);
        _token = token_;
        _deployer = msg.sender;
        _treasury = treasury_;
        _minStake = minStake_;
        _unbondingPeriod = unbondingPeriod_;
        _wrongedBps = wrongedBps_;
        _finderBps = finderBps_;
    }

    /*//////////////////////////////////////////////////////////////
                            PROVIDER ACTIONS
    //////////////////////////////////////////////////////////////*/

    /// @inheritdoc IProviderStaking
    function stake(uint256 amount) external nonReentrant {
        if (amount == 0) revert ProviderStaking_ZeroAmount();
        ProviderRecord storage p = _providers[msg.sender];
        uint256 newStake = uint256(p.stake) + amount;
        if (newStake > type(uint96).max) revert ProviderStaking_AmountTooLarge(amount);
        p.stake = uint96(newStake);
        emit Staked(msg.sender, amount, newStake);
        uint256 received = _token.pull(msg.sender, amount);
        if (received != amount) revert ProviderStaking_AmountNotReceived(amount, received);
    }

    /// @inheritdoc IProviderStaking
    function requestUnbond(uint256 amount) external {
        if (amount == 0) revert ProviderStaking_ZeroAmount();
        ProviderRecord storage p = _providers[msg.sender];
        uint256 free = uint256(p.stake) - p.locked;
        if (amount > free) revert ProviderStaking_InsufficientFreeStake(msg.sender, amount, free);
        UnbondingRecord storage u = _unbonding[msg.sender];
        uint256 total = uint256(u.amount) + amount;
        if (total > type(uint96).max) revert ProviderStaking_AmountTooLarge(amount);
        uint64 readyAt = uint64(block.timestamp) + _unbondingPeriod;
        p.stake -= uint96(amount);
        u.amount = uint96(total);
        u.readyAt = readyAt;
        emit UnbondRequested(msg.sender, amount, total, readyAt);
    }

    /// @inheritdoc IProviderStaking
    function withdrawUnbonded() external nonReentrant returns (uint256 amount) {
        UnbondingRecord memory u = _unbonding[msg.sender];
        if (u.amount == 0) revert ProviderStaking_NothingUnbonding(msg.sender);
        if (block.timestamp < u.readyAt) revert ProviderStaking_UnbondingNotReady(msg.sender, u.readyAt);
        amount = u.amount;
        delete _unbonding[msg.sender];
        emit Unbonded(msg.sender, amount);
        _token.safeTransfer(msg.sender, amount);
    }

    /// @inheritdoc IProviderStaking
    function register(bytes32 nodeKey_, string calldata metadataURI) external {
        if (nodeKey_ == bytes32(0)) revert ProviderStaking_InvalidNodeKey();
        _providers[msg.sender].registered = true;
        _nodeKeys[msg.sender] = nodeKey_;
        emit Registered(msg.sender, nodeKey_, metadataURI);
    }

    /*//////////////////////////////////////////////////////////////
                            ESCROW ACTIONS
    //////////////////////////////////////////////////////////////*/

    /// @inheritdoc IProviderStaking
    function setEscrow(address escrow_) external {
        if (msg.sender != _deployer) revert ProviderStaking_NotDeployer(msg.sender);
        if (_escrow != address(0)) revert ProviderStaking_EscrowAlreadySet(_escrow);
        if (escrow_ == address(0)) revert ProviderStaking_ZeroAddress();
        _escrow = escrow_;
        emit EscrowSet(escrow_);
    }

    /// @inheritdoc IProviderStaking
    function lockCollateral(address provider, uint256 amount) external onlyEscrow {
        ProviderRecord memory p = _providers[provider];
        if (!p.registered || p.stake < _minStake) revert ProviderStaking_NotRegistered(provider);
        // locked <= stake is an invariant of this contract.
        uint256 free;
        unchecked {
            free = uint256(p.stake) - p.locked;
        }
        if (amount > free) revert ProviderStaking_InsufficientFreeStake(provider, amount, free);
        uint96 newLocked;
        unchecked {
            // amount <= free, so locked + amount <= stake < 2^96.
            newLocked = p.locked + uint96(amount);
        }
        _providers[provider].locked = newLocked;
        emit CollateralLocked(provider, amount, newLocked);
    }

    /// @inheritdoc IProviderStaking
    function unlockCollateral(address provider, uint256 amount) external onlyEscrow {
        ProviderRecord storage p = _providers[provider];
        uint96 locked = p.locked;
        if (amount > locked) revert ProviderStaking_InsufficientLockedStake(provider, amount, locked);
        uint96 newLocked;
        unchecked {
            // amount <= locked.
            newLocked = locked - uint96(amount);
        }
        p.locked = newLocked;
        emit CollateralUnlocked(provider, amount, newLocked);
    }

    /// @inheritdoc IProviderStaking
    function slash(address provider, uint256 amount, address wronged, address finder)
        external
        onlyEscrow
        nonReentrant
        returns (uint256 toWronged, uint256 toFinder, uint256 toTreasury)
    {
        if (amount == 0) revert ProviderStaking_ZeroAmount();
        if (wronged == address(0) || finder == address(0)) revert ProviderStaking_ZeroAddress();
        ProviderRecord storage p = _providers[provider];
        uint96 locked = p.locked;
        if (amount > locked) revert ProviderStaking_InsufficientLockedStake(provider, amount, locked);
        unchecked {
            // amount <= locked <= stake.
            p.locked = locked - uint96(amount);
            p.stake -= uint96(amount);
        }
        toWronged = amount * _wrongedBps / _BPS;
        toFinder = amount * _finderBps / _BPS;
        unchecked {
            // wrongedBps + finderBps <= 10_000, so toWronged + toFinder <= amount.
            toTreasury = amount - toWronged - toFinder;
        }
        emit Slashed(provider, wronged, finder, amount, toWronged, toFinder, toTreasury);
        _pushShare(wronged, toWronged);
        _pushShare(finder, toFinder);
        _pushShare(_treasury, toTreasury);
    }

    /// @inheritdoc IProviderStaking
    function withdrawSlashProceeds() external nonReentrant returns (uint256 amount) {
        amount = _slashProceeds[msg.sender];
        if (amount == 0) revert ProviderStaking_NothingToWithdraw();
        _slashProceeds[msg.sender] = 0;
        emit SlashProceedsWithdrawn(msg.sender, amount);
        _token.safeTransfer(msg.sender, amount);
    }

    /// @dev Sends a slash share with bounded gas; if the transfer fails (a reverting recipient, an issuer
    /// blocklist) the share is credited to the recipient instead, so no recipient can make a slash (and so the
    /// escrow's resolution of a fault) revert. The credit is the only write after an external call; `slash` is
    /// guarded against re-entry and its other effects are already written.
    function _pushShare(address to, uint256 amount) private {
        if (amount == 0 || _token.tryPush(to, amount)) return;
        _slashProceeds[to] += amount;
        emit SlashProceedsCredited(to, amount);
    }

    /*//////////////////////////////////////////////////////////////
                                VIEWS
    //////////////////////////////////////////////////////////////*/

    /// @inheritdoc IProviderStaking
    function token() external view returns (address) {
        return address(_token);
    }

    /// @inheritdoc IProviderStaking
    function escrow() external view returns (address) {
        return _escrow;
    }

    /// @inheritdoc IProviderStaking
    function treasury() external view returns (address) {
        return _treasury;
    }

    /// @inheritdoc IProviderStaking
    function minStake() external view returns (uint256) {
        return _minStake;
    }

    /// @inheritdoc IProviderStaking
    function unbondingPeriod() external view returns (uint64) {
        return _unbondingPeriod;
    }

    /// @inheritdoc IProviderStaking
    function wrongedBps() external view returns (uint16) {
        return _wrongedBps;
    }

    /// @inheritdoc IProviderStaking
    function finderBps() external view returns (uint16) {
        return _finderBps;
    }

    /// @inheritdoc IProviderStaking
    function stakeOf(address provider) external view returns (uint256) {
        return _providers[provider].stake;
    }

    /// @inheritdoc IProviderStaking
    function freeStake(address provider) external view returns (uint256) {
        ProviderRecord memory p = _providers[provider];
        return uint256(p.stake) - p.locked;
    }

    /// @inheritdoc IProviderStaking
    function lockedStake(address provider) external view returns (uint256) {
        return _providers[provider].locked;
    }

    /// @inheritdoc IProviderStaking
    function unbonding(address provider) external view returns (uint256 amount, uint64 readyAt) {
        UnbondingRecord memory u = _unbonding[provider];
        return (u.amount, u.readyAt);
    }

    /// @inheritdoc IProviderStaking
    function slashProceeds(address recipient) external view returns (uint256) {
        return _slashProceeds[recipient];
    }

    /// @inheritdoc IProviderStaking
    function nodeKey(address provider) external view returns (bytes32) {
        return _nodeKeys[provider];
    }

    /// @inheritdoc IProviderStaking
    function isRegistered(address provider) external view returns (bool) {
        ProviderRecord memory p = _providers[provider];
        return p.registered && p.stake >= _minStake;
    }
}
