# Get-VolumeInfo: capacity, free space and kind (local, csv, smb) of the volume or share that holds
# each path. A path that does not exist yet is resolved through its nearest existing parent.
# Local and CSV volumes are read with Get-Volume -FilePath; SMB shares (UNC paths) with
# GetDiskFreeSpaceEx, which counts the caller's quota (and needs delegation to reach the share
# from a remote session).
# Prints one VolumeReport document with one entry per path, in order; a path on no reachable
# volume throws.
param([string[]]$Path = @())
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

# The path itself when it exists, else its nearest existing parent, else $null.
function Get-HvmExistingAncestor([string]$path) {
    $p = $path
    for ($i = 0; $i -lt 256 -and $p; $i++) {
        if (Test-Path -LiteralPath $p) { return $p }
        $parent = [System.IO.Path]::GetDirectoryName($p)
        if (-not $parent -or $parent -eq $p) { return $null }
        $p = $parent
    }
    return $null
}

# The root of the volume or share holding an existing path, with a trailing backslash:
# 'D:\', 'C:\ClusterStorage\Volume1\', '\\fs01\share\'.
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

function Get-HvmVolumeInfo([string]$path) {
    if (-not (Test-HvmAbsolutePath $path)) { throw "Path '$path' is not an absolute path" }
    $existing = Get-HvmExistingAncestor $path
    if (-not $existing) {
        throw "Path '$path' is not on a volume or share this host can reach (no part of it exists)"
    }
    $root = Get-HvmVolumeRoot $existing
    $isUnc = $root.StartsWith('\\')

    $volume = $null
    if (-not $isUnc) {
        try {
            $volume = Get-Volume -FilePath $existing -ErrorAction Stop | Select-Object -First 1
        } catch {
            Write-Warning -Message "Get-Volume -FilePath '$existing' failed, using GetDiskFreeSpaceEx: $($_.Exception.Message)"
            $volume = $null
        }
    }
    if ($volume) {
        $capacity = [int64]$volume.Size
        $free = [int64]$volume.SizeRemaining
        $fileSystem = [string]$volume.FileSystem
        $label = [string]$volume.FileSystemLabel
    } else {
        $available = [uint64]0
        $total = [uint64]0
        $totalFree = [uint64]0
        if (-not [HvMove.NativeVolume]::GetDiskFreeSpaceExW($root, [ref]$available, [ref]$total, [ref]$totalFree)) {
            $code = [System.Runtime.InteropServices.Marshal]::GetLastWin32Error()
            $reason = [System.ComponentModel.Win32Exception]::new($code).Message
            throw "Free space of '$root' could not be read: $reason ($code)"
        }
        $capacity = [int64]$total
        $free = [int64]$available
        $nameBuffer = [System.Text.StringBuilder]::new(261)
        $fsBuffer = [System.Text.StringBuilder]::new(261)
        $serial = [uint32]0
        $maxComponent = [uint32]0
        $flags = [uint32]0
        $fileSystem = ''
        $label = ''
        if ([HvMove.NativeVolume]::GetVolumeInformationW($root, $nameBuffer, [uint32]261, [ref]$serial, [ref]$maxComponent, [ref]$flags, $fsBuffer, [uint32]261)) {
            $fileSystem = $fsBuffer.ToString()
            $label = $nameBuffer.ToString()
        }
    }

    $kind = 'local'
    if ($isUnc) {
        $kind = 'smb'
    } elseif ($fileSystem -like 'CSVFS*' -or $root -like '*\ClusterStorage\*') {
        $kind = 'csv'
    }
    return [pscustomobject]@{
        path        = $path
        exists      = [bool](Test-Path -LiteralPath $path)
        volume      = $root
        kind        = $kind
        file_system = $fileSystem
        capacity    = $capacity
        free        = $free
        label       = $label
    }
}

$paths = @()
if ($null -ne $Path) { $paths = @($Path) }

$volumes = [System.Collections.Generic.List[object]]::new()
foreach ($p in $paths) { $volumes.Add((Get-HvmVolumeInfo ([string]$p))) }

$out = [pscustomobject]@{
    volumes = $volumes.ToArray()
}
ConvertTo-Json -InputObject $out -Depth 8 -Compress
