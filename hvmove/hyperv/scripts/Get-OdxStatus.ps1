# Get-OdxStatus: whether a copy from SourcePath to DestinationPath can be offloaded to the storage
# array (ODX). Checks, in order: the OS switch (FilterSupportedFeaturesMode 0 or absent), NTFS on
# both volumes (CSVFS over NTFS counts), every minifilter attached to either volume opting in to
# offload read and write (fltmc instances -v, SprtFtrs bits 0x3), and both volumes sitting on the
# same storage subsystem that reports ODX (Get-OffloadDataTransferSetting | Get-StorageSubSystem; only arrays
# managed through an SMP provider report it). SMB shares cannot be inspected from here.
# Prints one OdxStatus document; reason names the first check that failed.
param([string]$SourcePath, [string]$DestinationPath)
$ErrorActionPreference = 'Stop'

if (-not ('HvMove.NativeVolume' -as [type])) {
    Add-Type -Namespace HvMove -Name NativeVolume -MemberDefinition @'
[DllImport("kernel32.dll", CharSet = CharSet.Unicode, SetLastError = true)]
public static extern bool GetVolumePathNameW(string lpszFileName, System.Text.StringBuilder lpszVolumePathName, uint cchBufferLength);
[DllImport("kernel32.dll", CharSet = CharSet.Unicode, SetLastError = true)]
public static extern bool GetDiskFreeSpaceExW(string lpDirectoryName, out ulong lpFreeBytesAvailable, out ulong lpTotalNumberOfBytes, out ulong lpTotalNumberOfFreeBytes);
[DllImport("kernel32.dll", CharSet = CharSet.Unicode, SetLastError = true)]
public static extern bool GetVolumeInformationW(string lpRootPathName, System.Text.StringBuilder lpVolumeNameBuffer, uint nVolumeNameSize, out uint lpVolumeSerialNumber, out uint lpMaximumComponentLength, out uint lpFileSystemFlags, System.Text.StringBuilder lpFileSystemNameBuffer, uint nFileSystemNameSize);
'@
}

function Test-HvmAbsolutePath([string]$path) {
    return ($path -match '^[A-Za-z]:\\' -or $path -match '^\\\\[^\\]+\\[^\\]+')
}

# Test-Path writes an error when access is denied or the path is too long (PowerShell's
# FileSystemProvider.ItemExists: ItemExistsUnauthorizedAccessError, ItemExistsPathTooLongError)
# and then says False; with $ErrorActionPreference = 'Stop' that error ends the script. So every
# existence test has three answers: 'exists', 'absent', or 'unreachable: <why>'.
function Get-HvmPathState([string]$path) {
    $problems = $null
    $found = Test-Path -LiteralPath $path -ErrorAction SilentlyContinue -ErrorVariable problems
    if ($problems -and @($problems).Count -gt 0) { return 'unreachable: ' + [string]@($problems)[0].Exception.Message }
    if ($found) { return 'exists' }
    return 'absent'
}

# The path itself when it exists, else its nearest existing parent, else $null.
function Get-HvmExistingAncestor([string]$path) {
    $p = $path
    for ($i = 0; $i -lt 256 -and $p; $i++) {
        $state = Get-HvmPathState $p
        if ($state -eq 'exists') { return $p }
        if ($state -ne 'absent') { throw "Path '$path' cannot be reached from this host: $state" }
        $parent = [System.IO.Path]::GetDirectoryName($p)
        if (-not $parent -or $parent -eq $p) { return $null }
        $p = $parent
    }
    return $null
}

# The root of the volume or share holding an existing path, with a trailing backslash.
function Get-HvmVolumeRoot([string]$existing) {
    $buffer = [System.Text.StringBuilder]::new(1024)
    $root = ''
    if ([HvMove.NativeVolume]::GetVolumePathNameW($existing, $buffer, [uint32]1024)) {
        $root = $buffer.ToString()
    }
    if (-not $root) { $root = [System.IO.Path]::GetPathRoot($existing) }
    if (-not $root.EndsWith('\')) { $root += '\' }
    return $root
}

# Storage subsystems that report ODX capabilities: UniqueId -> FriendlyName.
function Get-HvmOdxSubsystems {
    $found = @{}
    try {
        foreach ($setting in @(Get-OffloadDataTransferSetting -ErrorAction Stop)) {
            foreach ($subsystem in @(Get-StorageSubSystem -OffloadDataTransferSetting $setting -ErrorAction Stop)) {
                $found[[string]$subsystem.UniqueId] = [string]$subsystem.FriendlyName
            }
        }
    } catch {
        Write-Warning -Message "ODX capabilities of the storage subsystems could not be read: $($_.Exception.Message)"
    }
    return $found
}

# One end of the copy: volume root, whether it is NTFS, and the storage subsystem behind it.
function Get-HvmOdxSide([string]$label, [string]$path) {
    if (-not (Test-HvmAbsolutePath $path)) { throw "$label '$path' is not an absolute path" }
    $existing = Get-HvmExistingAncestor $path
    if (-not $existing) { throw "$label '$path' is not on a volume or share this host can reach" }
    $side = @{
        root      = (Get-HvmVolumeRoot $existing)
        smb       = $false
        ntfs      = $false
        fs        = ''
        array     = $null
        arrayId   = ''
        arrayNote = ''
        volumeError = ''
    }
    if ($side.root.StartsWith('\\')) {
        $side.smb = $true
        return $side
    }
    try {
        $volume = Get-Volume -FilePath $existing -ErrorAction Stop | Select-Object -First 1
    } catch {
        # the file system is then unknown, not "not NTFS": the reason names the volume and why
        $side.volumeError = "Get-Volume failed for the $label volume $($side.root): $($_.Exception.Message)"
        $side.arrayNote = $side.volumeError
        return $side
    }
    $fs = [string]$volume.FileSystem
    $fsType = [string]$volume.FileSystemType
    $side.fs = $fs
    if ($fs -eq 'NTFS' -or $fsType -eq 'CSVFS_NTFS' -or $fsType -eq '32768') { $side.ntfs = $true }
    if ($fs -like 'CSVFS*' -and $fsType) { $side.fs = "$fs ($fsType)" }
    try {
        $partition = Get-Partition -Volume $volume -ErrorAction Stop | Select-Object -First 1
        $disk = Get-Disk -Partition $partition -ErrorAction Stop | Select-Object -First 1
        $subsystem = Get-StorageSubSystem -Disk $disk -ErrorAction Stop | Select-Object -First 1
        if ($subsystem) {
            $side.array = [string]$subsystem.FriendlyName
            $side.arrayId = [string]$subsystem.UniqueId
        }
    } catch {
        $side.arrayNote = "the disk behind the volume could not be resolved: $($_.Exception.Message)"
    }
    return $side
}

# The minifilters attached to one volume: name and SprtFtrs, from "fltmc instances -v <volume>".
# The header is localized but its dashed rule is not: rows follow the rule, and on each row the
# Frame number is followed by the eight hex digits of SprtFtrs (instance names may hold spaces).
function Get-HvmAttachedFilters([string]$root) {
    $volume = $root.TrimEnd('\')
    $lines = @(fltmc.exe instances -v $volume)
    if ($LASTEXITCODE -ne 0) { throw "fltmc instances -v '$volume' failed (exit code $LASTEXITCODE): $($lines -join ' ')" }
    $rows = $false
    foreach ($line in $lines) {
        $text = [string]$line
        if (-not $rows) {
            if ($text -match '^\s*-{3,}(\s+-{3,})+\s*$') { $rows = $true }
            continue
        }
        if (-not $text.Trim()) { continue }
        if ($text -notmatch '^\s*(\S+)\s.*?\s\d+\s+([0-9A-Fa-f]{8})(\s|$)') { throw "fltmc instances -v '$volume': unreadable row '$text'" }
        @{ name = $Matches[1]; features = [Convert]::ToInt64($Matches[2], 16) }
    }
}

$source = Get-HvmOdxSide 'SourcePath' $SourcePath
$destination = Get-HvmOdxSide 'DestinationPath' $DestinationPath

# 1. The OS switch: FilterSupportedFeaturesMode 1 disables ODX host-wide.
$osEnabled = $true
$fileSystemKey = Get-ItemProperty -LiteralPath 'HKLM:\SYSTEM\CurrentControlSet\Control\FileSystem' -ErrorAction SilentlyContinue
if ($fileSystemKey -and $null -ne $fileSystemKey.FilterSupportedFeaturesMode) {
    $osEnabled = ([int64]$fileSystemKey.FilterSupportedFeaturesMode -eq 0)
}

# 2. Minifilters: every filter attached to the source or destination volume must set SprtFtrs
# bits 0x1 (offload read) and 0x2 (offload write); filters attached only to other volumes do not
# matter. "Deploy Windows Offloaded Data Transfers" (technet jj200627): run
# "fltmc instances -v <volume>" and read the SprtFtrs column; "Offloaded Data Transfers"
# (learn.microsoft.com/windows-hardware/drivers/ifs/offloaded-data-transfers): a filter that does
# not opt in makes the offload fail on that volume.
$optedOut = [System.Collections.Generic.List[string]]::new()
$filtersChecked = $true
$filterProblem = ''
try {
    # a share's filters run on the file server: not visible here (the SMB case is reported below)
    $localRoots = @($source.root, $destination.root) | Where-Object { -not $_.StartsWith('\\') }
    foreach ($root in @($localRoots | Select-Object -Unique)) {
        foreach ($filter in @(Get-HvmAttachedFilters $root)) {
            if (($filter.features -band 3) -ne 3) {
                $optedOut.Add(('{0} on {1} (SprtFtrs 0x{2:x})' -f $filter.name, $root, $filter.features))
            }
        }
    }
} catch {
    $filtersChecked = $false
    $filterProblem = $_.Exception.Message
    Write-Warning -Message "The minifilters attached to the volumes could not be listed: $filterProblem"
}
$filtersOk = ($filtersChecked -and $optedOut.Count -eq 0)

# 3. The arrays.
$odxArrays = @{}
if (-not $source.smb -and -not $destination.smb) { $odxArrays = Get-HvmOdxSubsystems }
$sourceOdx = ($source.arrayId -and $odxArrays.ContainsKey($source.arrayId))
$destinationOdx = ($destination.arrayId -and $odxArrays.ContainsKey($destination.arrayId))
$sameArray = ($source.arrayId -and $source.arrayId -eq $destination.arrayId)

$odx = $false
if (-not $osEnabled) {
    $reason = 'ODX is disabled on this host (FilterSupportedFeaturesMode = 1)'
} elseif ($source.smb -or $destination.smb) {
    $reason = 'an SMB share is involved; whether the file server offloads the copy cannot be checked from this host'
} elseif ($source.volumeError -or $destination.volumeError) {
    $unknown = (@($source.volumeError, $destination.volumeError) | Where-Object { $_ }) -join '; '
    $reason = "the file system of a volume is unknown, so ODX cannot be judged: $unknown"
} elseif (-not $source.ntfs -or -not $destination.ntfs) {
    $reason = "ODX needs NTFS on both volumes (source: $($source.fs), destination: $($destination.fs))"
} elseif (-not $filtersChecked) {
    $reason = "the minifilters attached to the volumes could not be checked: $filterProblem"
} elseif (-not $filtersOk) {
    $reason = "minifilters attached to the volumes do not opt in to offload read/write: $($optedOut -join ', ')"
} elseif (-not $source.array -or -not $destination.array) {
    $notes = (@($source.arrayNote, $destination.arrayNote) | Where-Object { $_ }) -join '; '
    $reason = "the storage array behind a volume is unknown ($notes)"
} elseif (-not $sourceOdx -or -not $destinationOdx) {
    $reason = "the storage subsystem does not report ODX support (source: $($source.array), destination: $($destination.array)); arrays managed through SMI-S cannot report it"
} elseif (-not $sameArray) {
    $reason = "source and destination are on different arrays ($($source.array), $($destination.array)); cross-array ODX depends on the vendor and is not assumed"
} else {
    $odx = $true
    $reason = "both volumes are NTFS on ODX-capable array $($source.array)"
}

$out = [pscustomobject]@{
    source_volume      = $source.root
    destination_volume = $destination.root
    os_enabled         = [bool]$osEnabled
    filters_ok         = [bool]$filtersOk
    source_array       = $source.array
    destination_array  = $destination.array
    odx                = [bool]$odx
    reason             = $reason
}
ConvertTo-Json -InputObject $out -Depth 8 -Compress
