// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

/// @title IProviderStaking
/// @notice Provider bonds for gpunet. A provider stakes the staking token, registers its ed25519 node key, and
/// backs each open lease with collateral locked from its free stake. Only free stake can be unbonded, after an
/// unbonding period. Only the lease escrow may lock, unlock or slash collateral.
/// @dev Amounts are token base units. `stakeOf` = free + locked; unbonding tokens are no longer part of the stake
/// (and can no longer be slashed).
interface IProviderStaking {
    /*//////////////////////////////////////////////////////////////
                                EVENTS
    //////////////////////////////////////////////////////////////*/

    /// @notice Emitted when `provider` added `amount` to its stake; `totalStake` is its stake afterwards.
    event Staked(address indexed provider, uint256 amount, uint256 totalStake);

    /// @notice Emitted when `provider` moved `amount` of free stake into unbonding, withdrawable from `readyAt`.
    /// @param totalUnbonding The provider's whole unbonding amount afterwards (all of it becomes ready at `readyAt`).
    event UnbondRequested(address indexed provider, uint256 amount, uint256 totalUnbonding, uint64 readyAt);

    /// @notice Emitted when `provider` withdrew `amount` of unbonded tokens.
    event Unbonded(address indexed provider, uint256 amount);

    /// @notice Emitted when `provider` registered or re-registered its node key and metadata URI.
    event Registered(address indexed provider, bytes32 indexed nodeKey, string metadataURI);

    /// @notice Emitted when the escrow locked `amount` of `provider`'s free stake; `totalLocked` afterwards.
    event CollateralLocked(address indexed provider, uint256 amount, uint256 totalLocked);

    /// @notice Emitted when the escrow unlocked `amount` of `provider`'s locked stake; `totalLocked` afterwards.
    event CollateralUnlocked(address indexed provider, uint256 amount, uint256 totalLocked);

    /// @notice Emitted when the escrow slashed `amount` of `provider`'s locked stake.
    /// @param toWronged Share paid to `wronged`.
    /// @param toFinder Share paid to `finder`.
    /// @param toTreasury Remainder paid to the treasury.
    event Slashed(
        address indexed provider,
        address indexed wronged,
        address indexed finder,
        uint256 amount,
        uint256 toWronged,
        uint256 toFinder,
        uint256 toTreasury
    );

    /// @notice Emitted by `slash` when the transfer of a share to `recipient` failed: `amount` was credited to it
    /// instead, for `withdrawSlashProceeds`.
    event SlashProceedsCredited(address indexed recipient, uint256 amount);

    /// @notice Emitted when `recipient` withdrew `amount` of credited slash shares.
    event SlashProceedsWithdrawn(address indexed recipient, uint256 amount);

    /// @notice Emitted once, when the deployer set the escrow allowed to manage collateral.
    event EscrowSet(address indexed escrow);

    /*//////////////////////////////////////////////////////////////
                                ERRORS
    //////////////////////////////////////////////////////////////*/

    /// @notice A zero amount was given where a positive one is required.
    error ProviderStaking_ZeroAmount();
    /// @notice A zero address was given where a real one is required.
    error ProviderStaking_ZeroAddress();
    /// @notice The amount does not fit the stake accounting (uint96).
    error ProviderStaking_AmountTooLarge(uint256 amount);
    /// @notice The constructor's split does not add up (wrongedBps + finderBps > 10_000).
    error ProviderStaking_InvalidSplit(uint16 wrongedBps, uint16 finderBps);
    /// @notice `provider` has only `free` free stake, less than the `requested` amount.
    error ProviderStaking_InsufficientFreeStake(address provider, uint256 requested, uint256 free);
    /// @notice `provider` has only `locked` locked stake, less than the `requested` amount.
    error ProviderStaking_InsufficientLockedStake(address provider, uint256 requested, uint256 locked);
    /// @notice `provider` is not registered, or its stake is below the minimum stake.
    error ProviderStaking_NotRegistered(address provider);
    /// @notice The node key is zero.
    error ProviderStaking_InvalidNodeKey();
    /// @notice `provider` has nothing unbonding.
    error ProviderStaking_NothingUnbonding(address provider);
    /// @notice The unbonding of `provider` completes only at `readyAt`.
    error ProviderStaking_UnbondingNotReady(address provider, uint64 readyAt);
    /// @notice `caller` is not the escrow.
    error ProviderStaking_NotEscrow(address caller);
    /// @notice `caller` is not the deployer.
    error ProviderStaking_NotDeployer(address caller);
    /// @notice The escrow was already set to `escrow`.
    error ProviderStaking_EscrowAlreadySet(address escrow);
    /// @notice The caller has no credited slash shares.
    error ProviderStaking_NothingToWithdraw();
    /// @notice The token delivered `received` instead of `expected` (fee-on-transfer tokens are not supported).
    error ProviderStaking_AmountNotReceived(uint256 expected, uint256 received);

    /*//////////////////////////////////////////////////////////////
                            PROVIDER ACTIONS
    //////////////////////////////////////////////////////////////*/

    /// @notice Adds `amount` to the caller's stake, pulled with `transferFrom` (approve first). Reverts with
    /// `ProviderStaking_AmountNotReceived` unless exactly `amount` arrived (fee-on-transfer tokens are refused).
    /// @param amount Token base units, > 0.
    function stake(uint256 amount) external;

    /// @notice Moves `amount` of the caller's free stake into unbonding and (re)starts the unbonding period for
    /// the caller's whole unbonding amount.
    /// @param amount Token base units, > 0 and <= freeStake(caller).
    function requestUnbond(uint256 amount) external;

    /// @notice Sends the caller its whole unbonding amount once the unbonding period has passed.
    /// @return amount The tokens sent.
    function withdrawUnbonded() external returns (uint256 amount);

    /// @notice Registers the caller, or updates its registration.
    /// @param nodeKey The provider's ed25519 node public key (32 bytes, the libp2p peer key), non-zero.
    /// @param metadataURI Free-form metadata location; only emitted, not stored.
    function register(bytes32 nodeKey, string calldata metadataURI) external;

    /*//////////////////////////////////////////////////////////////
                            ESCROW ACTIONS
    //////////////////////////////////////////////////////////////*/

    /// @notice Sets the escrow allowed to lock, unlock and slash. Deployer only, once.
    /// @param escrow_ The LeaseEscrow address.
    function setEscrow(address escrow_) external;

    /// @notice Locks `amount` of `provider`'s free stake as lease collateral. Escrow only.
    /// @dev Reverts unless `provider` is registered (isRegistered) and has `amount` free stake.
    function lockCollateral(address provider, uint256 amount) external;

    /// @notice Returns `amount` of `provider`'s locked stake to its free stake. Escrow only.
    function unlockCollateral(address provider, uint256 amount) external;

    /// @notice Slashes `amount` of `provider`'s locked stake. Escrow only. The amount is split by the constructor
    /// basis points: `wrongedBps` to `wronged`, `finderBps` to `finder`, the rest to the treasury. Each share is
    /// pushed with a bounded amount of gas; a share whose transfer fails is credited to its recipient instead
    /// (`SlashProceedsCredited`, `withdrawSlashProceeds`), so no recipient can make a slash revert.
    /// @return toWronged Tokens owed to `wronged`.
    /// @return toFinder Tokens owed to `finder`.
    /// @return toTreasury Tokens owed to the treasury.
    function slash(address provider, uint256 amount, address wronged, address finder)
        external
        returns (uint256 toWronged, uint256 toFinder, uint256 toTreasury);

    /// @notice Sends the caller all its credited slash shares (see `slash`).
    /// @return amount Tokens sent.
    function withdrawSlashProceeds() external returns (uint256 amount);

    /*//////////////////////////////////////////////////////////////
                                VIEWS
    //////////////////////////////////////////////////////////////*/

    /// @notice The staking token.
    function token() external view returns (address);

    /// @notice The escrow allowed to manage collateral (zero until set).
    function escrow() external view returns (address);

    /// @notice Receiver of the treasury share of slashes.
    function treasury() external view returns (address);

    /// @notice Minimum stake for `isRegistered`.
    function minStake() external view returns (uint256);

    /// @notice Seconds between `requestUnbond` and `withdrawUnbonded`.
    function unbondingPeriod() external view returns (uint64);

    /// @notice Basis points of a slash paid to the wronged party.
    function wrongedBps() external view returns (uint16);

    /// @notice Basis points of a slash paid to the finder.
    function finderBps() external view returns (uint16);

    /// @notice Total stake of `provider` (free + locked, excluding unbonding).
    function stakeOf(address provider) external view returns (uint256);

    /// @notice Stake of `provider` that is neither locked nor unbonding.
    function freeStake(address provider) external view returns (uint256);

    /// @notice Stake of `provider` locked as collateral of open leases.
    function lockedStake(address provider) external view returns (uint256);

    /// @notice Amount of `provider` unbonding and when it becomes withdrawable.
    function unbonding(address provider) external view returns (uint256 amount, uint64 readyAt);

    /// @notice Slash shares credited to `recipient` because their transfer failed, not yet withdrawn.
    function slashProceeds(address recipient) external view returns (uint256);

    /// @notice The registered ed25519 node key of `provider` (zero if never registered).
    function nodeKey(address provider) external view returns (bytes32);

    /// @notice True when `provider` is registered and its stake is at least `minStake`.
    function isRegistered(address provider) external view returns (bool);
}
